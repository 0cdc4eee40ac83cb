"""The DuckDB warehouse: views over the lake, day-replaced tables, one writer at a time.

DuckDB allows one read-write process per database file. Writers here keep their connection
short (open, one transaction, close) and retry the open with backoff while another process
holds the file; after ``timeout_s`` they fail with a message naming the file.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from emo_assets.lib import lake, schemas

LAKE_TABLES: dict[str, pa.Schema | None] = {
    "audio_files": schemas.AUDIO_FILES,
    "resampled_audio": schemas.RESAMPLED_AUDIO,
    "emotion_scores": schemas.EMOTION_SCORES,
    "emotion_segments": schemas.EMOTION_SEGMENTS,
    "emotion_embeddings": None,  # width depends on the model; see emotion_embeddings_schema
    "quarantine": schemas.QUARANTINE,
}


class WarehouseLockedError(RuntimeError):
    pass


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text


@contextmanager
def connect(path: Path, read_only: bool = False, timeout_s: float = 120.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, waiting with exponential backoff while another process holds it."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() >= deadline:
                if _is_lock_error(exc):
                    raise WarehouseLockedError(
                        f"{path} is held by another process for {timeout_s:.0f} s ({exc}). "
                        "Close other read-write connections (a DuckDB CLI or notebook holding the file) "
                        "and run again; analysts can use read_only=True or `duckdb -readonly`."
                    ) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    try:
        yield con
    finally:
        con.close()


_DUCKDB_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.float64(): "DOUBLE",
    pa.float32(): "FLOAT",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def _duckdb_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_fixed_size_list(arrow_type):
        return f"{_duckdb_type(arrow_type.value_type)}[{arrow_type.list_size}]"
    return _DUCKDB_TYPES[arrow_type]


def _empty_select(schema: pa.Schema) -> str:
    columns = ", ".join(f'CAST(NULL AS {_duckdb_type(f.type)}) AS "{f.name}"' for f in schema)
    return f"SELECT {columns} WHERE false"


def refresh_lake_views(con: duckdb.DuckDBPyConnection, lake_root: Path, embed_dim: int | None = None) -> None:
    """(Re)create one view per lake table, reading every day's Parquet file.

    A table with no day yet gets an empty view with the right columns, so analysts' SQL binds.
    """
    for table, schema in LAKE_TABLES.items():
        if schema is None:
            schema = schemas.emotion_embeddings_schema(embed_dim or 1)
        days = lake.partition_days(lake_root, table)
        if days:
            glob = lake.table_glob(lake_root, table).replace("'", "''")
            body = f"SELECT * FROM read_parquet('{glob}', hive_partitioning = false, union_by_name = true)"
            if table == "emotion_embeddings":
                # Parquet has no fixed-size list: restore FLOAT[D] from the Arrow schema it keeps.
                newest = pq.read_schema(lake.partition_file(lake_root, table, days[-1]))
                width = newest.field("embedding").type.list_size
                body = body.replace("SELECT *", f"SELECT * REPLACE (CAST(embedding AS FLOAT[{width}]) AS embedding)")
        elif table == "emotion_embeddings" and embed_dim is None:
            continue
        else:
            body = _empty_select(schema)
        con.execute(f'CREATE OR REPLACE VIEW "{table}" AS {body}')


def replace_day(con: duckdb.DuckDBPyConnection, table: str, day: str, rows: pa.Table) -> None:
    """Replace one day of a warehouse table with ``rows`` in one transaction."""
    con.register("incoming_rows", rows)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM incoming_rows LIMIT 0')
            con.execute(f'DELETE FROM "{table}" WHERE "date" = CAST(? AS DATE)', [day])
            con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM incoming_rows')
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("incoming_rows")
