"""What changed in the warehouse since the analysts' copy was last published.

Every writer that replaces a day of a table, or a whole table, records ``(table, day)`` (``day``
NULL: the whole table) in ``_publish.pending`` inside the same transaction as its change, so a
change is recorded exactly when it commits. Publishing (lib/store/publish.py) reads the pending
changes, exports those days, and clears them in the transaction that records the new version.

The bookkeeping lives in its own schema, ``_publish``, so the warehouse's own tables (``main``)
are what they were: analysts' SQL and the tests list ``main`` only.
"""

from __future__ import annotations

import duckdb

SCHEMA = "_publish"
PENDING = f"{SCHEMA}.pending"


def _ensure(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    con.execute(f"CREATE TABLE IF NOT EXISTS {PENDING} (table_name VARCHAR NOT NULL, day DATE)")


def record_change(con: duckdb.DuckDBPyConnection, table: str, day: str | None = None) -> None:
    """Record that ``day`` of ``table`` (None: all of it) changed; call inside the change's transaction."""
    _ensure(con)
    con.execute(f"INSERT INTO {PENDING} VALUES (?, CAST(? AS DATE))", [table, day])


def pending(con: duckdb.DuckDBPyConnection) -> dict[str, set[str | None]]:
    """table -> the days recorded as changed (None in the set: the whole table)."""
    _ensure(con)
    rows = con.execute(f"SELECT DISTINCT table_name, CAST(day AS VARCHAR) FROM {PENDING}").fetchall()
    out: dict[str, set[str | None]] = {}
    for table, day in rows:
        out.setdefault(table, set()).add(day)
    return out
