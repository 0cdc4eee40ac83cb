"""The table registry: every table the lake and the warehouse hold has one entry, and its schema
is the one the pipeline writes."""

import duckdb
import pyarrow.parquet as pq
import pytest

from emo_assets.lib import schemas
from emo_assets.lib.store import warehouse
from emo_assets.lib.store.sql_models import discover_sql_models
from emo_assets.resources import PACKAGED_SQL_DIR


@pytest.mark.parametrize("table", list(schemas.TABLES.values()), ids=lambda t: t.name)
def test_every_entry_has_a_schema_holding_its_key(table):
    schema = table.arrow_schema(embed_dim=8)
    assert schema is not None
    assert set(table.key) <= set(schema.names), table.key
    assert "date" in schema.names  # every table is replaced day by day
    assert table.home in ("lake", "warehouse") and table.description


@pytest.mark.parametrize("table", list(schemas.TABLES.values()), ids=lambda t: t.name)
def test_every_column_is_described(table):
    schema = table.arrow_schema(embed_dim=8)
    assert list(table.columns) == schema.names  # same columns, same order
    assert all(text.strip() for text in table.columns.values())


def test_quarantine_stages_are_tables():
    assert {stage.value for stage in schemas.Stage} <= set(schemas.TABLES)


def test_registry_covers_every_table_the_lake_and_the_warehouse_hold(reference_day):
    data_dir, _, _ = reference_day
    lake_dir = data_dir / "lake"
    lake_folders = {p.name for p in lake_dir.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert lake_folders - set(schemas.LAKE_TABLES) == set(), "lake tables without a registry entry"
    sql_models = {m.name for m in discover_sql_models(PACKAGED_SQL_DIR)}
    con = warehouse.open_read_copy(data_dir)
    try:
        published = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        columns = {
            name: [r[0] for r in con.execute(f'DESCRIBE "{name}"').fetchall()]
            for name in published
            if name in schemas.TABLES
        }
    finally:
        con.close()
    # the pipeline's file: lake tables are its views, warehouse tables its DuckDB tables (the read
    # copy publishes every one of them as a view over published files)
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        kinds = dict(
            con.execute(
                "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        )
    finally:
        con.close()
    assert set(kinds) == published
    unregistered = set(kinds) - set(schemas.TABLES) - sql_models
    assert unregistered == set(), "warehouse tables without a registry entry"
    # lake tables are views over the lake, warehouse tables are DuckDB tables
    assert {n for n, kind in kinds.items() if kind == "VIEW"} == {n for n in schemas.LAKE_TABLES if n in kinds}
    every_table = {n for n, t in schemas.TABLES.items() if not t.opt_in}
    assert every_table <= set(kinds), "registry tables a day's run did not make"
    for name, names in columns.items():
        assert names == schemas.TABLES[name].arrow_schema(embed_dim=1).names, name


def test_lake_files_have_the_registry_schema(reference_day):
    data_dir, _, lake = reference_day
    for relative in lake:
        table = relative.split("/")[0]
        if table == "_rejects":  # each stage's quarantine rows, gathered into quarantine
            assert pq.read_schema(data_dir / "lake" / relative).equals(schemas.QUARANTINE)
            continue
        if table == "_deferred":  # files still being written, taken by the next run
            assert pq.read_schema(data_dir / "lake" / relative).equals(schemas.DEFERRED)
            continue
        schema = pq.read_schema(data_dir / "lake" / relative)
        width = schema.field("embedding").type.list_size if "embedding" in schema.names else None
        assert schema.remove_metadata().equals(schemas.TABLES[table].arrow_schema(width)), relative
