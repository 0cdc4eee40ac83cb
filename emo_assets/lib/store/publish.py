"""Publishing the analysts' copy of the warehouse: one version of every table, costing what changed.

A publish, under the warehouse's writer lock (publishers and pipeline writers queue on it; readers
never wait):

1. writes an immutable Parquet file under ``<data>/published/`` for each thing that changed since
   the last publish: a lake day whose file was replaced (a hard link to it: lake writes replace a
   file by rename, so the link is a frozen snapshot of that day), a day of a day-partitioned
   warehouse table that a writer recorded as changed (lib/store/changes.py; ``COPY (SELECT ...
   WHERE date = ?)``), a whole table (the SQL models) recorded as changed. Every row exported is
   read from DuckDB's blocks, whose checksums DuckDB verifies: a damaged block fails the publish
   (:class:`warehouse.WarehouseCorruptError`, the file marked corrupt) before anything is visible.
2. records the new catalog (table, day -> file) and clears the recorded changes in one transaction
   of ``warehouse.duckdb`` (schema ``_publish``);
3. writes ``warehouse_read.duckdb`` anew from the catalog: a small DuckDB file with one view per
   table over the explicit list of its files (paths relative to the data directory), the
   similarity macros (``extras``) and the table and column comments; temp file, then
   ``os.replace``: readers see the previous version or this one, never a mix of two;
4. removes published files no version references any more once they have been unreferenced for
   ``grace_s`` (a reader who opened the previous read copy keeps reading its files meanwhile).

Cost: bytes written are the changed days'; the catalog and the read copy hold one entry per day
and table (O(#days) small rows), and the lake side costs one ``stat`` per day file.

A lake in an object store (``EMO_LAKE_URI``) has no hard links: a changed day's object is copied
inside the store (a server-side copy, no byte leaves it) to an immutable object under
``<lake>/_published/``, which the catalog names by URI; an object's identity is its ETag and size,
listed once per table. The read copy records the lake's URI, so that :func:`warehouse.open_read_copy`
registers the store's fsspec filesystem with DuckDB before a view reads it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from emo_assets.lib import schemas
from emo_assets.lib.files import objectstore
from emo_assets.lib.files.atomic import atomic_path, remove_stale_temps
from emo_assets.lib.store import changes, lake, warehouse

CATALOG = f"{changes.SCHEMA}.files"
RETIRED = f"{changes.SCHEMA}.retired"
VERSIONS = f"{changes.SCHEMA}.versions"

# How long a published file no version references is kept: a reader who opened an older read copy
# (a notebook left open) keeps reading that version's files for this long.
GRACE_S = 24 * 3600.0

# Where a lake in an object store keeps its published objects: <lake>/_published/<table>/date=<day>/...
PUBLISHED_PREFIX = "_published"

# Per-day warehouse tables (the registry's); every other table of the warehouse is published whole.
DAY_TABLES = schemas.WAREHOUSE_TABLES


@dataclass(frozen=True)
class Published:
    version: int
    read_copy: Path
    written: tuple[str, ...]  # files written by this publish, relative to the data directory
    removed: tuple[str, ...]  # unreferenced files removed after their grace period


def _ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    changes.pending(con)  # creates the schema and the pending table
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {CATALOG} (table_name VARCHAR NOT NULL, day DATE, path VARCHAR NOT NULL, "
        "source VARCHAR, version BIGINT NOT NULL)"
    )
    con.execute(f"CREATE TABLE IF NOT EXISTS {RETIRED} (path VARCHAR NOT NULL, retired_at TIMESTAMPTZ NOT NULL)")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {VERSIONS} (version BIGINT NOT NULL, published_at TIMESTAMPTZ NOT NULL, "
        "files_written BIGINT NOT NULL)"
    )


Key = tuple[str, str | None]  # (table, day); day None: the whole table


def _catalog(con: duckdb.DuckDBPyConnection) -> dict[Key, tuple[str, str | None]]:
    rows = con.execute(f"SELECT table_name, CAST(day AS VARCHAR), path, source FROM {CATALOG}").fetchall()
    return {(table, day): (path, source) for table, day, path, source in rows}


def _main_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT internal ORDER BY 1"
    ).fetchall()
    return [name for (name,) in rows]


def _source_identity(path: Path) -> str:
    """What changes when a lake file is replaced (by rename: a new inode) or rewritten."""
    st = path.stat()
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def _identities(lake_dir: Path | str, table: str, files: dict[str, Path | str]) -> dict[str, str]:
    """day -> the identity of its lake file: one ``stat`` per file, or one listing of an object store's
    table (an object's ETag and size)."""
    if objectstore.is_remote(lake_dir):
        listed = objectstore.identities(str(lake.partition_file(lake_dir, table, "*")))
        return {day: listed[path] for day, path in files.items() if path in listed}
    return {day: _source_identity(path) for day, path in files.items()}


class _Writer:
    """Names and writes the files of one version."""

    def __init__(self, data_dir: Path, version: int, lake_dir: Path | str):
        self.data_dir = data_dir
        self.lake_dir = lake_dir
        self.version = version
        self.written: list[str] = []

    def _name(self, table: str, day: str | None, root: str = warehouse.PUBLISHED_DIR) -> str:
        folder = f"{root}/{table}" + (f"/date={day}" if day else "")
        return f"{folder}/v{self.version:08d}-{secrets.token_hex(4)}.parquet"

    def link(self, table: str, day: str, source: Path | str) -> str:
        """A hard link to the lake file (copied where the file system has no hard links); in an object
        store, a server-side copy of the object under ``<lake>/_published/``, named by its URI."""
        if objectstore.is_remote(source):
            uri = objectstore.join(self.lake_dir, self._name(table, day, PUBLISHED_PREFIX))
            objectstore.copy(source, uri)
            self.written.append(uri)
            return uri
        rel = self._name(table, day)
        target = self.data_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # no hard links here (another file system, or one without them): a copy
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        self.written.append(rel)
        return rel

    def export(self, con: duckdb.DuckDBPyConnection, table: str, day: str | None) -> str | None:
        """``day`` of ``table`` (None: all of it) as Parquet; None when the day holds no row."""
        rel = self._name(table, day)
        target = self.data_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        where, params = ('WHERE "date" = CAST(? AS DATE)', [day]) if day else ("", [])
        with atomic_path(target) as tmp:
            rows = con.execute(
                f"COPY (SELECT * FROM \"{table}\" {where}) TO '{_sql_text(tmp)}' (FORMAT parquet, COMPRESSION zstd)",
                params,
            ).fetchone()[0]
        if day and not rows:  # the day was emptied: no file for it
            target.unlink()
            return None
        self.written.append(rel)
        return rel


def _sql_text(value: object) -> str:
    return str(value).replace("'", "''")


def _plan_warehouse(
    con: duckdb.DuckDBPyConnection,
    catalog: dict,
    pending: dict[str, set[str | None]],
    writer: _Writer,
    in_flight: frozenset[str],
) -> dict[Key, tuple[str, str | None] | None]:
    """Export what changed in the warehouse's tables; returns catalog updates (None: drop the entry)."""
    updates: dict[Key, tuple[str, str | None] | None] = {}
    present = _main_tables(con)
    for table in present:
        changed = pending.get(table, set())
        known = {day for (t, day) in catalog if t == table}
        if table in DAY_TABLES:
            if None in changed or not known:  # the whole table was replaced, or never published
                every_day = warehouse.table_days(con, table)
                updates.update({(table, day): None for day in known - set(every_day)})
                days = [day for day in every_day if day not in in_flight]
            else:
                days = sorted(d for d in changed if d is not None and d not in in_flight)
            for day in days:
                rel = writer.export(con, table, day)
                updates[(table, day)] = (rel, None) if rel else None
        elif changed or (table, None) not in catalog:
            updates[(table, None)] = (writer.export(con, table, None), None)
    lake_tables = set(schemas.LAKE_TABLES)
    for table, day in catalog:
        if table not in present and table not in lake_tables:  # a table dropped (a SQL model removed)
            updates[(table, day)] = None
    return updates


def _plan_lake(
    lake_dir: Path, catalog: dict, writer: _Writer, in_flight: frozenset[str]
) -> dict[Key, tuple[str, str | None] | None]:
    """Link every lake day whose file changed since it was published; drop days no longer in the lake."""
    updates: dict[Key, tuple[str, str | None] | None] = {}
    for table in schemas.LAKE_TABLES:
        files = lake.partition_files(lake_dir, table)
        identities = _identities(lake_dir, table, files)
        for day, path in files.items():
            if day in in_flight or day not in identities:  # in flight, or removed since it was listed
                continue
            identity = identities[day]
            if catalog.get((table, day), (None, None))[1] != identity:
                updates[(table, day)] = (writer.link(table, day, path), identity)
        for t, day in catalog:
            if t == table and day not in files and day not in in_flight:
                updates[(t, day)] = None
    return updates


def _commit(
    con: duckdb.DuckDBPyConnection, version: int, updates: dict, written: list[str], in_flight: frozenset[str]
) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        for (table, day), entry in updates.items():
            con.execute(
                f"DELETE FROM {CATALOG} WHERE table_name = ? AND day IS NOT DISTINCT FROM CAST(? AS DATE)",
                [table, day],
            )
            if entry is not None:
                con.execute(
                    f"INSERT INTO {CATALOG} VALUES (?, CAST(? AS DATE), ?, ?, ?)", [table, day, *entry, version]
                )
        # a day in flight stays pending: its run's end publishes it
        con.execute(
            f"DELETE FROM {changes.PENDING} WHERE day IS NULL OR NOT list_contains(?::DATE[], day)",
            [sorted(in_flight)],
        )
        con.execute(f"INSERT INTO {VERSIONS} VALUES (?, now(), ?)", [version, len(written)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _view_sql(table: str, files: list[str], arrays: dict[str, str], missing: dict[str, str] | None = None) -> str:
    """``missing``: registry columns no file of the table has yet (days written before the column
    existed), as typed NULLs, so the same SQL binds on old and new lakes alike."""
    listed = ", ".join(f"'{_sql_text(f)}'" for f in files)
    casts = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in arrays.items())
    select = f"SELECT * REPLACE ({casts})" if casts else "SELECT *"
    select += "".join(f', CAST(NULL AS {t}) AS "{c}"' for c, t in (missing or {}).items())
    return f'CREATE VIEW "{table}" AS {select} FROM read_parquet([{listed}], union_by_name = true)'


def _missing_columns(copy: duckdb.DuckDBPyConnection, table: str, files: list[str], embed_dim) -> dict[str, str]:
    """The registry's columns of lake ``table`` that none of ``files`` has, with their DuckDB types."""
    schema = schemas.TABLES[table].arrow_schema(embed_dim)
    if schema is None:
        return {}
    listed = ", ".join(f"'{_sql_text(f)}'" for f in files)
    have = {
        r[0] for r in copy.execute(f"DESCRIBE SELECT * FROM read_parquet([{listed}], union_by_name = true)").fetchall()
    }
    return {f.name: warehouse._duckdb_type(f.type) for f in schema if f.name not in have and f.name != "embedding"}


def _lake_arrays(data_dir: Path, newest: str) -> dict[str, str]:
    """FLOAT[D] columns of a lake file: Parquet has no fixed-size list, its Arrow schema keeps it."""
    with objectstore.open_input(newest if objectstore.is_remote(newest) else data_dir / newest) as f:
        schema = pq.read_schema(f)
    return {f.name: warehouse._duckdb_type(f.type) for f in schema if pa.types.is_fixed_size_list(f.type)}


def _warehouse_columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str, str | None]]]:
    rows = con.execute(
        "SELECT c.table_name, c.column_name, c.data_type, c.comment FROM duckdb_columns() c "
        "JOIN duckdb_tables() t ON t.table_oid = c.table_oid WHERE t.schema_name = 'main' "
        "ORDER BY c.table_name, c.column_index"
    ).fetchall()
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for table, column, kind, comment in rows:
        out.setdefault(table, []).append((column, kind, comment))
    return out


def _write_read_copy(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    target: Path,
    extras: Callable[[duckdb.DuckDBPyConnection], None],
    lake_dir: Path | str,
) -> None:
    """``warehouse_read.duckdb`` anew from the catalog (``con``: the warehouse, catalog committed)."""
    by_table: dict[str, list[str]] = {}
    for table, path in con.execute(f"SELECT table_name, path FROM {CATALOG} ORDER BY table_name, day").fetchall():
        by_table.setdefault(table, []).append(path)
    columns = _warehouse_columns(con)
    table_comments = dict(
        con.execute("SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
    )
    embed_dim = None
    remove_stale_temps(target.parent, target.name)  # left by a killed publisher; we hold the lock
    with atomic_path(target) as tmp:
        tmp.unlink()  # DuckDB makes the file
        copy = duckdb.connect(str(tmp), config={"file_search_path": str(data_dir)})
        try:
            lake.attach_duckdb(copy, lake_dir)  # views over an object store's files bind through fsspec
            statements = []
            if objectstore.is_remote(lake_dir):  # for open_read_copy: the store to register before reading
                statements += [
                    f"CREATE SCHEMA {warehouse.LAKE_URI_MACRO[0]}",
                    f"CREATE MACRO {'.'.join(warehouse.LAKE_URI_MACRO)}() AS {warehouse._quote(str(lake_dir))}",
                ]
            for table, files in sorted(by_table.items()):
                missing = {}
                if table in schemas.LAKE_TABLES:
                    arrays = _lake_arrays(data_dir, files[-1])
                else:
                    arrays = {c: k for c, k, _ in columns.get(table, []) if k.endswith("]")}
                if "embedding" in arrays:
                    embed_dim = int(arrays["embedding"].split("[")[1].rstrip("]"))
                if table in schemas.LAKE_TABLES:
                    width = int(arrays["embedding"].split("[")[1].rstrip("]")) if "embedding" in arrays else embed_dim
                    missing = _missing_columns(copy, table, files, width)
                statements.append(_view_sql(table, files, arrays, missing))
            for table in schemas.LAKE_TABLES:  # a lake table with no day yet: empty, with its columns
                schema = schemas.TABLES[table].arrow_schema(embed_dim)
                if table not in by_table and schema is not None and not schemas.TABLES[table].opt_in:
                    statements.append(f'CREATE VIEW "{table}" AS {warehouse._empty_select(schema)}')
            for table, cols in sorted(columns.items()):  # a warehouse table with no row: empty, its columns
                if table not in by_table:
                    empty = ", ".join(f'CAST(NULL AS {kind}) AS "{column}"' for column, kind, _ in cols)
                    statements.append(f'CREATE VIEW "{table}" AS SELECT {empty} WHERE false')
            for table in sorted(set(by_table) | set(columns)):
                if table in schemas.TABLES:
                    continue  # commented from the registry by apply_comments
                if table_comments.get(table):
                    statements.append(f'COMMENT ON VIEW "{table}" IS {warehouse._quote(table_comments[table])}')
                for column, _, comment in columns.get(table, []):
                    if comment:
                        statements.append(f'COMMENT ON COLUMN "{table}"."{column}" IS {warehouse._quote(comment)}')
            if statements:
                copy.execute("BEGIN TRANSACTION;\n" + ";\n".join(statements) + ";\nCOMMIT")
            extras(copy)
            warehouse.apply_comments(copy)
        finally:
            copy.close()
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)


def _collect_garbage(con: duckdb.DuckDBPyConnection, data_dir: Path, grace_s: float, lake_dir: Path | str) -> list[str]:
    """Files under published/ (and objects under an object-store lake's _published/) no catalog entry
    references: noted when first seen unreferenced, removed ``grace_s`` after. Returns the files removed."""
    root = data_dir / warehouse.PUBLISHED_DIR
    referenced = {path for (path,) in con.execute(f"SELECT path FROM {CATALOG}").fetchall()}
    on_disk = {str(p.relative_to(data_dir)) for p in root.rglob("*.parquet")} if root.exists() else set()
    if objectstore.is_remote(lake_dir):
        on_disk |= set(objectstore.glob(objectstore.join(lake_dir, PUBLISHED_PREFIX, "*", "date=*", "*.parquet")))
    retired = dict(con.execute(f"SELECT path, retired_at FROM {RETIRED}").fetchall())
    now = dt.datetime.now(dt.UTC)
    newly = sorted(on_disk - referenced - set(retired))
    expired = sorted(p for p, at in retired.items() if p not in referenced and (now - at).total_seconds() >= grace_s)
    expired += [p for p in newly if grace_s <= 0]
    for rel in expired:
        if objectstore.is_remote(rel):
            objectstore.remove(rel, missing_ok=True)
        else:
            (data_dir / rel).unlink(missing_ok=True)
    con.execute("BEGIN TRANSACTION")
    con.execute(
        f"DELETE FROM {RETIRED} WHERE path IN (SELECT unnest(?::VARCHAR[]))",
        [expired + sorted(referenced & set(retired))],
    )
    for rel in newly:
        if grace_s > 0:
            con.execute(f"INSERT INTO {RETIRED} VALUES (?, ?)", [rel, now])
    con.execute("COMMIT")
    for folder in sorted({(data_dir / rel).parent for rel in expired if not objectstore.is_remote(rel)}, reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return expired


def publish(
    warehouse_path: Path,
    lake_dir: Path | str,
    extras: Callable[[duckdb.DuckDBPyConnection], None] = lambda con: None,
    grace_s: float = GRACE_S,
    timeout_s: float | None = None,
    in_flight: frozenset[str] | set[str] = frozenset(),
) -> Published:
    """Publish one version of the warehouse and the lake for the analysts (see the module doc).

    ``in_flight``: days another run is processing now (``day_lock.days_in_flight``); their lake
    files and warehouse rows are left as last published, and their changes stay pending.

    Raises :class:`warehouse.WarehouseCorruptError` (the read copy left as it was) when the warehouse
    is marked corrupt or DuckDB finds a damaged block while exporting.
    """
    warehouse_path = Path(warehouse_path)
    data_dir = warehouse_path.parent
    target = warehouse.read_copy_path(warehouse_path)
    with warehouse.writer_lock(warehouse_path, timeout_s):
        marker = warehouse.corrupt_marker(warehouse_path)
        if marker.exists():
            raise warehouse.WarehouseCorruptError(marker.read_text().strip())
        with warehouse.writer_connection(warehouse_path, timeout_s) as con:
            _ensure_tables(con)
            version = con.execute(f"SELECT coalesce(max(version), 0) + 1 FROM {VERSIONS}").fetchone()[0]
            catalog = _catalog(con)
            writer = _Writer(data_dir, version, lake_dir)
            in_flight = frozenset(in_flight)
            updates = _plan_warehouse(con, catalog, changes.pending(con), writer, in_flight)
            updates.update(_plan_lake(lake_dir, catalog, writer, in_flight))
            _commit(con, version, updates, writer.written, in_flight)
            _write_read_copy(con, data_dir, target, extras, lake_dir)
            removed = _collect_garbage(con, data_dir, grace_s, lake_dir)
    return Published(version, target, tuple(writer.written), tuple(removed))


def purge(
    warehouse_path: Path,
    holds: Callable[[Path | str], bool],
    clean: Callable[[Path | str], None],
    timeout_s: float | None = None,
    lake_dir: Path | str | None = None,
) -> tuple[list[str], list[str]]:
    """After an erasure or a retention deletion has been published: no published file may keep the
    erased rows, grace period or not. A file that ``holds`` them is deleted at once when no version
    references it any more (superseded: the publish just made points at clean files), or rewritten
    in place by ``clean`` when the current version still lists it (a day another run was writing,
    left as it was published). Hard links share bytes with the lake file they were made from: the
    lake file was rewritten by rename, so this link is the last name of the old bytes. With a lake
    in an object store (``lake_dir`` a URI), its ``_published/`` objects are purged the same way.

    Returns the files deleted and the files rewritten, relative to the data directory (objects: their URI)."""
    warehouse_path = Path(warehouse_path)
    data_dir = warehouse_path.parent
    root = data_dir / warehouse.PUBLISHED_DIR
    remote = lake_dir is not None and objectstore.is_remote(lake_dir)
    if not root.is_dir() and not remote:
        return [], []
    deleted: list[str] = []
    rewritten: list[str] = []
    with warehouse.writer_lock(warehouse_path, timeout_s):
        with warehouse.writer_connection(warehouse_path, timeout_s) as con:
            _ensure_tables(con)
            referenced = {path for (path,) in con.execute(f"SELECT path FROM {CATALOG}").fetchall()}
            files: list[tuple[Path | str, str]] = [
                (path, str(path.relative_to(data_dir)))
                for path in (sorted(root.rglob("*.parquet")) if root.is_dir() else [])
                if not path.name.startswith(".")
            ]
            if remote:
                found = objectstore.find(objectstore.join(lake_dir, PUBLISHED_PREFIX))
                files += [(uri, uri) for uri in found if uri.endswith(".parquet")]
            for path, rel in files:
                if not holds(path):
                    continue
                if rel in referenced:
                    clean(path)
                    rewritten.append(rel)
                else:
                    if objectstore.is_remote(path):
                        objectstore.remove(path, missing_ok=True)
                    else:
                        path.unlink()
                    deleted.append(rel)
            con.execute(f"DELETE FROM {RETIRED} WHERE path IN (SELECT unnest(?::VARCHAR[]))", [deleted])
    for folder in sorted({(data_dir / rel).parent for rel in deleted if not objectstore.is_remote(rel)}, reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return deleted, rewritten
