"""Analysts' SQL: each ``dbt_like_sql/<name>.sql`` is the asset ``<name>``, a DuckDB table.

Upstream assets are the tables the query reads, parsed with sqlglot: a lake view maps to the
asset that writes it, another SQL model to its own asset. A table nobody makes adds no
dependency and fails only that model, at run time, with DuckDB's message.
"""

from pathlib import Path

import dagster as dg

from emo_assets.lib.store import warehouse
from emo_assets.lib.store.sql_models import SqlModel, SqlModelError, discover_sql_models, materialize_sql_model
from emo_assets.resources import PROJECT_ROOT, StorageResource

SQL_DIR = PROJECT_ROOT / "dbt_like_sql"

# Table an analyst reads -> the asset that makes it.
TABLE_ASSETS = {
    "audio_files": "raw_audio",
    "resampled_audio": "resampled_audio",
    "emotion_scores": "emotion_scores",
    "emotion_embeddings": "emotion_embeddings",
    "emotion_segments": "emotion_segments",
    "emotion_frames": "emotion_frames",
    "quarantine": "quarantine",
    "emotion_clusters": "emotion_clusters",
    "satisfaction_predictions": "satisfaction_predictions",
}


def _sql_model_asset(model: SqlModel, sql_model_names: set[str]) -> dg.AssetsDefinition:
    deps = sorted(
        {TABLE_ASSETS[t] for t in model.upstream_tables if t in TABLE_ASSETS}
        | {t for t in model.upstream_tables if t in sql_model_names and t != model.name}
    )

    @dg.asset(
        name=model.name,
        deps=deps,
        group_name="sql_models",
        kinds={"duckdb", "sql"},
        description=f"`{model.path.name}`: CREATE OR REPLACE TABLE {model.name} AS <query>\n\n```sql\n{model.sql.strip()}\n```",
        metadata={"sql_file": dg.MetadataValue.path(str(model.path))},
    )
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        try:
            with warehouse.connect(storage.warehouse_path) as con:
                rows = materialize_sql_model(con, model)
        except SqlModelError as exc:
            raise dg.Failure(str(exc)) from None
        return dg.MaterializeResult(
            metadata={"row_count": rows, "upstream_tables": dg.MetadataValue.json(list(model.upstream_tables))}
        )

    return _asset


def build_sql_model_assets(sql_dir: Path = SQL_DIR) -> list[dg.AssetsDefinition]:
    models = discover_sql_models(sql_dir)
    names = {m.name for m in models}
    return [_sql_model_asset(m, names) for m in models]
