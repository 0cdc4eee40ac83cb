"""Analysts' SQL: each ``<sql_dir>/<name>.sql`` is the asset ``<name>``, a DuckDB table.

Upstream assets are the tables the query reads, parsed with sqlglot: a table of the registry
(``schemas.TABLES``) maps to its asset (the same name), plus ``lake_views`` when it is a lake
table; another SQL model maps to its own asset. A table nobody makes adds no dependency and
fails only that model, at run time, with DuckDB's message.
"""

from pathlib import Path

import dagster as dg

from emo_assets.lib import schemas
from emo_assets.lib.store import warehouse
from emo_assets.lib.store.sql_models import SqlModel, SqlModelError, discover_sql_models, materialize_sql_model
from emo_assets.resources import StorageResource

# The asset that (re)creates the DuckDB views over the lake tables (assets/emotion.py).
LAKE_VIEWS = "lake_views"


def _upstream_assets(model: SqlModel, sql_model_names: set[str]) -> list[str]:
    tables = [schemas.TABLES[t] for t in model.upstream_tables if t in schemas.TABLES]
    deps = {t.name for t in tables}
    if any(t.home == "lake" for t in tables):
        deps.add(LAKE_VIEWS)
    deps |= {t for t in model.upstream_tables if t in sql_model_names and t != model.name}
    return sorted(deps)


def _sql_model_asset(model: SqlModel, sql_model_names: set[str]) -> dg.AssetsDefinition:
    @dg.asset(
        name=model.name,
        deps=_upstream_assets(model, sql_model_names),
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


def build_sql_model_assets(sql_dir: Path) -> list[dg.AssetsDefinition]:
    """One asset per ``*.sql`` file of ``sql_dir`` (the storage resource's ``sql_models_dir``)."""
    models = discover_sql_models(sql_dir)
    names = {m.name for m in models}
    return [_sql_model_asset(m, names) for m in models]
