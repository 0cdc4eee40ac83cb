"""Analysts' SQL: each ``<sql_dir>/<name>.sql`` is the asset ``<name>``, a DuckDB table.

Upstream assets are the tables the query reads, parsed with sqlglot: a table of the registry
(``schemas.TABLES``) maps to its asset (the same name), plus ``lake_views`` when it is a lake
table; another SQL model maps to its own asset. A table nobody makes adds no dependency and
fails only that model, at run time, with DuckDB's message.
"""

from pathlib import Path

import dagster as dg

from emo_assets.assets.metadata import COLUMN_LINEAGE, COLUMN_SCHEMA
from emo_assets.assets.rebuild import ensure_warehouse
from emo_assets.lib import schemas
from emo_assets.lib.store import warehouse
from emo_assets.lib.store.sql_models import (
    SqlModel,
    SqlModelError,
    column_origins,
    discover_sql_models,
    materialize_sql_model,
    model_comment,
)
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


def _column_lineage(model: SqlModel, upstream_assets: list[str]) -> dict:
    """``dagster/column_lineage`` from sqlglot's lineage: each output column and the columns of
    upstream assets it is computed from. A model sqlglot cannot trace publishes none (it fails
    loudly when materialized); a column computed from no column (``count(*)``) has no deps."""
    # the registry's columns let sqlglot expand `*` over our tables (types do not matter to lineage)
    known = {t.name: {f.name: "UNKNOWN" for f in t.arrow_schema(1)} for t in schemas.TABLES.values()}
    try:
        origins = column_origins(model, known)
    except SqlModelError:
        return {}
    deps = {
        o.name: [
            dg.TableColumnDep(asset_key=dg.AssetKey(t), column_name=c) for t, c in o.sources if t in upstream_assets
        ]
        for o in origins
    }
    return {COLUMN_LINEAGE: dg.TableColumnLineage(deps_by_column=deps)}


def _built_schema(con, table: str) -> dg.TableSchema:
    """The built table's columns, types and comments, as DuckDB has them."""
    rows = con.execute(
        "SELECT column_name, data_type, comment FROM duckdb_columns() "
        "WHERE table_name = ? AND schema_name = current_schema() ORDER BY column_index",
        [table],
    ).fetchall()
    return dg.TableSchema(columns=[dg.TableColumn(name, kind, description=comment) for name, kind, comment in rows])


def _sql_model_asset(model: SqlModel, sql_model_names: set[str]) -> dg.AssetsDefinition:
    upstream = _upstream_assets(model, sql_model_names)
    about = model_comment(model)

    @dg.asset(
        name=model.name,
        deps=upstream,
        group_name="sql_models",
        kinds={"duckdb", "sql"},
        description=(f"{about}\n\n" if about else "")
        + f"`{model.path.name}`: CREATE OR REPLACE TABLE {model.name} AS <query>\n\n```sql\n{model.sql.strip()}\n```",
        metadata={"sql_file": dg.MetadataValue.path(str(model.path)), **_column_lineage(model, upstream)},
    )
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
        ensure_warehouse(context, storage)
        try:
            with warehouse.connect(storage.warehouse_path) as con:
                rows = materialize_sql_model(con, model)
                schema = _built_schema(con, model.name)
        except SqlModelError as exc:
            raise dg.Failure(str(exc)) from None
        return dg.MaterializeResult(
            metadata={
                "row_count": rows,
                COLUMN_SCHEMA: schema,
                "upstream_tables": dg.MetadataValue.json(list(model.upstream_tables)),
            }
        )

    return _asset


def build_sql_model_assets(sql_dir: Path) -> list[dg.AssetsDefinition]:
    """One asset per ``*.sql`` file of ``sql_dir`` (the storage resource's ``sql_models_dir``)."""
    models = discover_sql_models(sql_dir)
    names = {m.name for m in models}
    return [_sql_model_asset(m, names) for m in models]
