"""Whether a file or an object still holds an erased recording: the final check of an erasure.

An id is looked for as text (from its first 12 characters on: a preview in Dagster's run history
shows it cut short), as numpy's UTF-32 and as the binary digest in the raw bytes (read in
blocks: a raw recording may be gigabytes); Parquet, which compresses its pages, is decoded; a DuckDB
file, which compresses its strings, is queried. Local files and object-store objects alike
(lib/privacy/bucket.py reads both). No dagster here.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc

from emo_assets.lib.files import objectstore
from emo_assets.lib.privacy import bucket
from emo_assets.lib.privacy.run_history import PREFIX


def _needles(ids: list[str]) -> list[bytes]:
    # as text from its first PREFIX characters: the whole id, or one cut short as a preview cuts it
    return [form for a in ids for form in (a[:PREFIX].encode("ascii"), a.encode("utf-32-le"), bytes.fromhex(a))]


def holds(path: Path | str, ids: list[str]) -> bool:
    """True when the file's (or object's) bytes hold an id: as text, as numpy's UTF-32, or as the raw
    digest; for Parquet (compressed), when a text column holds one."""
    name = PurePosixPath(str(path)).name
    if name.endswith(".parquet") and not name.startswith("."):
        rows = bucket.read_parquet(path)
        for column in rows.schema:
            if pa.types.is_string(column.type) and pc.any(pc.is_in(rows.column(column.name), pa.array(ids))).as_py():
                return True
    if name.endswith(".duckdb") and _duckdb_holds(path, ids):
        return True
    needles = _needles(ids)
    overlap = max(len(n) for n in needles) - 1
    tail = b""
    with objectstore.open_input(path) as f:  # in blocks: a raw recording may be gigabytes
        while block := f.read(1 << 22):
            data = tail + block
            if any(needle in data for needle in needles):
                return True
            tail = data[-overlap:]
    return False


def _duckdb_holds(path: Path, ids: list[str]) -> bool:
    """A DuckDB file compresses its strings: ask it whether a table's text column holds an id."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = con.execute(
            "SELECT c.schema_name, c.table_name, c.column_name FROM duckdb_columns() c JOIN duckdb_tables() t "
            "ON c.database_name = t.database_name AND c.schema_name = t.schema_name AND c.table_name = t.table_name "
            "WHERE c.database_name = current_database() AND c.data_type = 'VARCHAR'"
        ).fetchall()
        for schema, table, column in columns:
            found = con.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" WHERE "{column}" IN (SELECT unnest(CAST(? AS VARCHAR[])))',
                [ids],
            ).fetchone()[0]
            if found:
                return True
    finally:
        con.close()
    return False


def files_holding(root: Path, ids: list[str], skip: Path | None = None) -> list[Path]:
    """Every file under ``root`` (but ``skip``) that :func:`holds` an id."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or (skip is not None and path.is_relative_to(skip)):
            continue
        if holds(path, ids):
            found.append(path)
    return found
