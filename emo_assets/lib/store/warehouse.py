"""The DuckDB warehouse: views over the lake, day-replaced tables, one writer at a time.

DuckDB allows one read-write process per database file, and a read-only connection held by
another process blocks every writer for as long as it stays open. So the pipeline and analysts
use two files:

* ``warehouse.duckdb`` is the pipeline's. Its writers take ``warehouse.duckdb.writer.lock``
  (an exclusive ``flock``: pipeline writers queue on it instead of polling DuckDB), open DuckDB,
  run one short transaction and close. A process outside the pipeline that holds the file
  anyway is waited for with backoff, the wait logged (logger ``emo_assets.lib.store.warehouse``)
  at once and every ``LOG_EVERY_S`` naming the holder's PID and command and what to do; after
  ``WRITE_WAIT_S`` the step fails with our message naming the file, the holder and the remedy
  (DuckDB's own hint, "open it read-only", is wrong here: a reader blocks writers too). Lake files
  are already written by then, so a re-run only redoes that step.
* ``warehouse_read.duckdb`` is the analysts' (:func:`read_copy_path`, opened with
  :func:`open_read_copy`): a small DuckDB file of views over immutable Parquet files under
  ``<data>/published/``, one version of every table, replaced once at the end of a run by
  lib/store/publish.py (temp file, then ``os.replace``). Its paths are relative to the data
  directory. Opening it, even for hours, never blocks the pipeline.

The warehouse is derived state: a missing or corrupt one is rebuilt from the lake
(lib/analytics/rebuild.py, ``emo rebuild``). :class:`WarehouseCorruptError` names the file and that
remedy, and a corrupt file is marked (:func:`corrupt_marker`) so that it is never published and the
next run rebuilds it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.files.atomic import atomic_path, remove_stale_temps
from emo_assets.lib.files.flock import exclusive_flock
from emo_assets.lib.store import lake
from emo_assets.lib.store.changes import record_change

# The lake tables, each a view in DuckDB: derived from the registry in schemas.py.
LAKE_TABLES: tuple[str, ...] = schemas.LAKE_TABLES


# How long a pipeline writer waits for other writers and for a process holding the file, and how
# often the wait is logged (naming the holder).
WRITE_WAIT_S = 120.0
LOG_EVERY_S = 10.0

log = logging.getLogger(__name__)


class WarehouseLockedError(RuntimeError):
    pass


class WarehouseCorruptError(RuntimeError):
    """The warehouse file cannot be read back whole; the message names the file and the remedy."""


# DuckDB's messages for a damaged file: block checksums, bad headers, a file that is not DuckDB's.
_CORRUPT = re.compile(
    r"corrupt|checksum|not a valid duckdb|invalid.*(header|magic)|unexpected end of file|"
    r"failed to read|could not read enough bytes|serializ",
    re.I,
)


def corrupt_marker(path: Path) -> Path:
    """``warehouse.duckdb.corrupt``: written when DuckDB reports the file damaged; it holds the error.
    While it exists the warehouse is never published, and the next run rebuilds it from the lake."""
    path = Path(path)
    return path.with_name(f"{path.name}.corrupt")


def corrupt_message(path: Path, detail: str) -> str:
    path = Path(path)
    return (
        f"{path} is corrupt ({detail.strip().splitlines()[0] if detail.strip() else 'unreadable'}). The warehouse is "
        f"derived from the lake: rebuild it with `emo rebuild --data-dir {path.parent}` (the next run also "
        f"rebuilds it before its first write). The analysts' copy {read_copy_path(path).name} was not replaced."
    )


def is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and bool(_CORRUPT.search(str(exc)))


def corrupt_error(path: Path, exc: BaseException) -> WarehouseCorruptError:
    """The error to raise for ``exc``, DuckDB's report of damage in ``path``; marks the file corrupt."""
    message = corrupt_message(path, str(exc))
    corrupt_marker(path).write_text(message + "\n")
    return WarehouseCorruptError(message)


def verify(path: Path, lake_root: Path | str | None = None) -> None:
    """Raise :class:`WarehouseCorruptError` unless every block of every table of ``path`` reads back.
    (``lake_root``: the lake the views read, whose filesystem is registered when it is an object store.)

    DuckDB 2.0 has no integrity pragma; it checks a block's checksum when it reads the block. So the
    file is opened (headers, catalog, WAL replay) and every column of every table is scanned to the
    end; views are only bound (they read the lake). This reads the whole file: ``emo rebuild --check``
    and the rebuild run it; publishing reads, and so checks, every block it publishes.
    """
    path = Path(path)
    try:
        con = duckdb.connect(str(path), read_only=True)
        try:
            if lake_root is not None:
                lake.attach_duckdb(con, lake_root)
            tables = con.execute(
                "SELECT table_schema, table_name, table_type FROM information_schema.tables"
            ).fetchall()
            for schema, name, kind in tables:
                if kind == "VIEW":
                    con.execute(f'DESCRIBE "{schema}"."{name}"').fetchall()
                    continue
                # a hash of every column of every row: each block is read (and its checksum checked)
                con.execute(f'SELECT bit_xor(hash(COLUMNS(*))) FROM "{schema}"."{name}"').fetchall()
        finally:
            con.close()
    except duckdb.Error as exc:
        if not is_corruption(exc):
            raise
        raise corrupt_error(path, exc) from None


def read_copy_path(path: Path) -> Path:
    """The analysts' copy of the warehouse: ``warehouse.duckdb`` -> ``warehouse_read.duckdb``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_read{path.suffix}")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text


# DuckDB: 'Could not set lock on file "...": Conflicting lock is held in /usr/bin/python3 (PID 123). However, ...'
_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def lock_holder(exc: Exception) -> str:
    """Who holds the file, from DuckDB's lock error: ``PID 123 (python3 notebook.py)`` when DuckDB
    names the process (the command line is read from /proc where there is one), else DuckDB's own
    first sentence. DuckDB's advice to open the file read-only is left out: a read-only connection
    blocks the pipeline's writers just the same."""
    text = str(exc)
    match = _HOLDER.search(text)
    if match is None:
        return text.split(". However")[0].strip()
    pid, program = match.group("pid"), match.group("program")
    try:
        command = " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
        )
    except OSError:
        command = ""
    command = command or program
    return f"PID {pid} ({command[:157] + '...' if len(command) > 160 else command})"


def open_read_copy(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the analysts' copy of the warehouse in ``data_dir``, from any
    working directory: its views name published files relative to the data directory, which
    DuckDB resolves through ``file_search_path``. The one way the product opens the read copy.

    Raises FileNotFoundError, naming the remedy, when there is no read copy, or when its published
    files are gone (a data directory copied without ``published/``): it never reads another
    directory's files.
    """
    data_dir = Path(data_dir).resolve()
    path = read_copy_path(data_dir / "warehouse.duckdb")
    if not path.exists() and (data_dir / "warehouse.duckdb").exists():
        raise FileNotFoundError(
            f"no analysts' warehouse at {path} yet: the pipeline's warehouse.duckdb has not been published. "
            "A run launched with `dagster` (the CLI, the UI, a schedule) is published by the publish_on_* "
            f"sensors while dagster-daemon runs; `emo publish --data-dir {data_dir}` publishes it now"
        )
    if not path.exists():
        raise FileNotFoundError(
            f"no analysts' warehouse at {path}: run `emo demo` or `emo run --date YYYY-MM-DD` first "
            "(or point --data-dir / EMO_DATA_DIR at the data directory)"
        )
    if not (data_dir / PUBLISHED_DIR).is_dir():
        raise FileNotFoundError(
            f"{path} reads the files under {data_dir / PUBLISHED_DIR}, which is missing (a data directory "
            "copied or restored without it?): copy published/ along with it, or run "
            f"`emo rebuild --data-dir {data_dir}` to publish this directory's own lake"
        )
    # Attached to a new in-memory database rather than opened with duckdb.connect(path): DuckDB
    # shares one instance per path within a process, so a second connect() while one is open
    # would read the version the first opened, not the one published since.
    con = duckdb.connect(config={"file_search_path": str(data_dir)})
    try:
        con.execute(f"ATTACH {_quote(str(path))} AS {READ_COPY_ALIAS} (READ_ONLY)")
        con.execute(f"USE {READ_COPY_ALIAS}")
        # Views over a lake in an object store read it through its fsspec filesystem (never httpfs).
        schema, name = LAKE_URI_MACRO
        if con.execute(
            "SELECT 1 FROM duckdb_functions() WHERE database_name = ? AND schema_name = ? AND function_name = ?",
            [READ_COPY_ALIAS, schema, name],
        ).fetchone():
            lake.attach_duckdb(con, con.execute(f"SELECT {schema}.{name}()").fetchone()[0])
    except BaseException:
        con.close()
        raise
    return con


# The folder, under the data directory, of the files the read copy's views read.
PUBLISHED_DIR = "published"
# The name the read copy is attached under by :func:`open_read_copy`.
READ_COPY_ALIAS = "warehouse_read"
# (schema, macro) of the read copy naming its lake's URI, when the lake is in an object store.
LAKE_URI_MACRO = ("_emo", "lake_uri")


def _locked_message(path: Path, waited_s: float, detail: str) -> str:
    return (
        f"{path} is held by another process; waited {waited_s:.0f} s ({detail}). The pipeline's lake "
        f"files are written; only this warehouse step failed. Close the other connection (a DuckDB CLI "
        f"or notebook on {path.name}) and re-run the day. Analysts: open {read_copy_path(path)} "
        "instead, it is published at the end of every run and never blocks it."
    )


def _waiting_message(path: Path, waited_s: float, timeout_s: float, holder: str) -> str:
    return (
        f"waiting for {path}: held by {holder}; waited {waited_s:.0f} s of {timeout_s:.0f} s. Close that "
        f"connection to let the pipeline write (analysts: open {read_copy_path(path).name} instead); "
        f"after {timeout_s:.0f} s this step fails and the day can be re-run."
    )


def _open(path: Path, read_only: bool, timeout_s: float) -> duckdb.DuckDBPyConnection:
    start = time.monotonic()
    deadline = start + timeout_s
    next_log = start  # the first conflict is logged at once, then every LOG_EVERY_S
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if is_corruption(exc):
                raise corrupt_error(path, exc) from None
            if not isinstance(exc, duckdb.IOException) or not _is_lock_error(exc):
                raise
            holder = lock_holder(exc)
            now = time.monotonic()
            if now >= deadline:
                # our message replaces DuckDB's, whose read-only hint is wrong advice here
                raise WarehouseLockedError(_locked_message(path, timeout_s, f"held by {holder}")) from None
            if now >= next_log:
                log.warning(_waiting_message(path, now - start, timeout_s, holder))
                next_log = now + LOG_EVERY_S
            time.sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 2, 2.0)


@contextmanager
def writer_lock(path: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the pipeline writers' lock of the warehouse at ``path`` (see the module's docstring)."""
    path = Path(path)
    timeout_s = WRITE_WAIT_S if timeout_s is None else timeout_s
    lock = path.with_name(f"{path.name}.writer.lock")

    def refused() -> WarehouseLockedError:
        return WarehouseLockedError(_locked_message(path, timeout_s, f"another pipeline writer holds {lock.name}"))

    def waiting(waited_s: float) -> None:
        try:
            holder = lock.read_text().strip()  # written by the holder below
        except OSError:
            holder = ""
        log.warning(_waiting_message(path, waited_s, timeout_s, f"pipeline writer {holder or '?'} ({lock.name})"))

    with exclusive_flock(lock, timeout_s, 0.05, refused, on_wait=waiting, wait_every_s=LOG_EVERY_S) as fd:
        # Name the holder in the lock file for those waiting (a flock itself does not say who holds it).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} ({' '.join(' '.join(sys.argv).split())[:160]})".encode(), 0)
        try:
            yield
        finally:  # the command line may name a recording (`emo erase`): not kept once released
            os.ftruncate(fd, 0)


@contextmanager
def connect(path: Path, read_only: bool = False, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse. A writer holds the writer lock. The analysts' copy is published once,
    at the end of a run (lib/store/publish.py), not here.

    DuckDB's report of a damaged file raises :class:`WarehouseCorruptError` naming it and the remedy.
    """
    path = Path(path)
    timeout_s = WRITE_WAIT_S if timeout_s is None else timeout_s
    if read_only:
        con = _open(path, True, timeout_s)
        try:
            yield con
        finally:
            con.close()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(path, timeout_s):
        with writer_connection(path, timeout_s) as con:
            yield con
            apply_comments(con)


@contextmanager
def writer_connection(path: Path, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """The writer's connection, the caller holding :func:`writer_lock`; closed (checkpointed) at the end."""
    con = _open(path, False, WRITE_WAIT_S if timeout_s is None else timeout_s)
    try:
        yield con
    except duckdb.Error as exc:
        if is_corruption(exc):
            raise corrupt_error(path, exc) from None
        raise
    finally:
        try:
            con.close()  # checkpoints: the file alone holds every committed change
        except duckdb.Error as exc:
            if is_corruption(exc):
                raise corrupt_error(path, exc) from None
            raise


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

    A table with no day yet gets an empty view with the right columns, so analysts' SQL binds. An
    object-store lake is read through its fsspec filesystem, registered with ``con``.
    """
    lake.attach_duckdb(con, lake_root)
    for table in LAKE_TABLES:
        days = lake.partition_days(lake_root, table)
        if days:
            glob = lake.table_glob(lake_root, table).replace("'", "''")
            source = f"read_parquet('{glob}', hive_partitioning = false, union_by_name = true)"
            body = f"SELECT * FROM {source}"
            newest = lake.read_schema(lake_root, table, days[-1])
            width = newest.field("embedding").type.list_size if "embedding" in newest.names else embed_dim
            if "embedding" in newest.names:
                # Parquet has no fixed-size list: restore FLOAT[D] from the Arrow schema it keeps.
                body = body.replace("SELECT *", f"SELECT * REPLACE (CAST(embedding AS FLOAT[{width}]) AS embedding)")
            # Columns the registry added after some days were written (a lake of only such days has
            # none of them): NULL, so the same SQL binds on old and new lakes alike.
            schema = schemas.TABLES[table].arrow_schema(width)
            have = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
            missing = [f for f in schema or [] if f.name not in have and f.name != "embedding"]
            if missing:
                extra = ", ".join(f'CAST(NULL AS {_duckdb_type(f.type)}) AS "{f.name}"' for f in missing)
                body = body.replace(f" FROM {source}", f", {extra} FROM {source}", 1)
        else:
            schema = schemas.TABLES[table].arrow_schema(embed_dim)
            if schema is None or schemas.TABLES[table].opt_in:
                continue  # an embedding table before the width is known, or a table nobody switched on
            body = _empty_select(schema)
        con.execute(f'CREATE OR REPLACE VIEW "{table}" AS {body}')


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def apply_comments(con: duckdb.DuckDBPyConnection) -> None:
    """Comment every registry table or view present and each of its columns, and our macros, from
    the descriptions in ``schemas.TABLES`` and ``schemas.MACROS``; read them back with
    ``duckdb_tables()``, ``duckdb_views()``, ``duckdb_columns()``, ``duckdb_functions()`` or DESCRIBE.

    Run after views and tables are (re)made: ``CREATE OR REPLACE`` drops a comment. Only a comment
    that differs is written. A column the registry does not describe (a table written by an older
    schema) keeps no comment; the tests find it.
    """
    present = dict(
        con.execute(
            "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE schema_name = current_schema() "
            "UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() WHERE NOT internal AND schema_name = current_schema()"
        ).fetchall()
    )
    current = {
        (t, c): comment
        for t, c, comment in con.execute(
            "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE schema_name = current_schema()"
        ).fetchall()
    }
    current_tables = dict(
        con.execute(
            "SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = current_schema() "
            "UNION ALL SELECT view_name, comment FROM duckdb_views() WHERE NOT internal AND schema_name = current_schema()"
        ).fetchall()
    )
    statements = []
    for name, kind in present.items():
        table = schemas.TABLES.get(name)
        if table is None:
            continue  # a SQL model: commented when it is built (sql_models.materialize_sql_model)
        if current_tables.get(name) != _sentence(table.description):
            statements.append(f'COMMENT ON {kind} "{name}" IS {_quote(_sentence(table.description))}')
        for column, text in table.columns.items():
            if (name, column) in current and current[(name, column)] != text:
                statements.append(f'COMMENT ON COLUMN "{name}"."{column}" IS {_quote(text)}')
    macros = dict(
        con.execute(
            "SELECT function_name, comment FROM duckdb_functions() "
            "WHERE function_type = 'table_macro' AND schema_name = current_schema() AND NOT internal"
        ).fetchall()
    )
    for name, text in schemas.MACROS.items():
        if name in macros and macros[name] != text:
            statements.append(f'COMMENT ON MACRO TABLE "{name}" IS {_quote(text)}')
    if statements:
        con.execute("BEGIN TRANSACTION;\n" + ";\n".join(statements) + ";\nCOMMIT")  # one commit, not one per comment


EMBEDDING_INDEX = schemas.TABLES["embedding_index"].name


def embedding_width(con: duckdb.DuckDBPyConnection, table: str = "emotion_embeddings") -> int | None:
    """D of the ``embedding FLOAT[D]`` column of ``table``, or None if there is no such table."""
    row = con.execute(
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = ? AND column_name = 'embedding' AND table_schema = current_schema()",
        [table],
    ).fetchall()  # fetch to the end: DuckDB refuses the next statement while a result is open
    if not row:
        return None
    row = row[0]
    match = re.fullmatch(r"FLOAT\[(\d+)\]", row[0])
    if match is None:
        raise ValueError(
            f"{table}.embedding is {row[0]}, not FLOAT[D]; refresh the warehouse views "
            "(warehouse.refresh_lake_views) so embeddings are read as fixed-size arrays"
        )
    return int(match.group(1))


def replace_index_day(con: duckdb.DuckDBPyConnection, day: str, embeddings: pa.Table) -> None:
    """Replace one day of the similarity index: the day's embeddings copied into DuckDB's storage.

    The index holds one embedding width; embeddings of another width (a model change) start it
    anew, since vectors of two models are never compared.
    """
    width = embeddings.schema.field("embedding").type.list_size
    current = embedding_width(con, EMBEDDING_INDEX)
    if current is not None and current != width:
        con.execute("BEGIN TRANSACTION")
        con.execute(f'DROP TABLE "{EMBEDDING_INDEX}"')
        record_change(con, EMBEDDING_INDEX)  # every day is gone
        con.execute("COMMIT")
    elif current is not None and "channel" not in table_columns(con, EMBEDDING_INDEX):
        # An index made before channels existed: its rows are mono (README "Two-channel calls"); every
        # day of it changed, so the next publish writes them again with the column.
        con.execute("BEGIN TRANSACTION")
        con.execute(f"ALTER TABLE \"{EMBEDDING_INDEX}\" ADD COLUMN channel VARCHAR DEFAULT 'mono'")
        record_change(con, EMBEDDING_INDEX)
        con.execute("COMMIT")
    replace_day(con, EMBEDDING_INDEX, day, embeddings)


def replace_day(con: duckdb.DuckDBPyConnection, table: str, day: str, rows: pa.Table) -> None:
    """Replace one day of a warehouse table with ``rows`` in one transaction."""
    _with_rows(
        con,
        rows,
        [
            (f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM incoming_rows LIMIT 0', []),
            (f'DELETE FROM "{table}" WHERE "date" = CAST(? AS DATE)', [day]),
            (f'INSERT INTO "{table}" BY NAME SELECT * FROM incoming_rows', []),
        ],
        changed=(table, day),
    )


def _with_rows(
    con: duckdb.DuckDBPyConnection,
    rows: pa.Table,
    statements: list[tuple[str, list]],
    changed: tuple[str, str | None],
) -> None:
    """Run ``statements`` (SQL, parameters) in one transaction with ``rows`` registered as ``incoming_rows``;
    the transaction records ``changed`` (table, day or None) for the next publish (lib/store/changes.py)."""
    con.register("incoming_rows", rows)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            for sql, params in statements:
                con.execute(sql, params)
            record_change(con, *changed)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("incoming_rows")


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Column names of ``table`` in the current schema, in order; [] when there is no such table."""
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = ? AND table_schema = current_schema() ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [name for (name,) in rows]


def table_days(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The days ``table`` holds rows of, sorted; [] when there is no such table."""
    if not table_columns(con, table):
        return []
    rows = con.execute(f'SELECT DISTINCT CAST("date" AS VARCHAR) FROM "{table}" ORDER BY 1').fetchall()
    return [day for (day,) in rows]


def replace_table(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Replace every row (and the columns) of ``table`` with ``rows`` in one transaction.

    Readers see the old table or the new one, never a mix.
    """
    _with_rows(
        con, rows, [(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM incoming_rows', [])], changed=(table, None)
    )


def delete_all(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Delete every row of ``table`` in one transaction (recorded for the next publish)."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f'DELETE FROM "{table}"')
        record_change(con, table)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def erase_values(path: Path, values: list[str], timeout_s: float | None = None) -> dict[str, int]:
    """Delete every row of every warehouse table holding one of ``values`` in a text column (an
    erasure: ``audio_id`` and any other column naming the recording), then rewrite the file so the
    deleted rows do not survive in its free blocks. Returns rows deleted per table. The days (or
    tables) changed are recorded for the next publish (lib/store/changes.py), which the caller runs
    so that the analysts' copy stops naming the rows too. Views (over the lake) are kept as they are.

    DuckDB marks deleted rows free but leaves their bytes in the file until the blocks are reused
    (VACUUM and CHECKPOINT do not clear them): ``COPY FROM DATABASE`` into a new file copies only
    live rows, views, macros and comments; the new file then replaces the old one (``os.replace``).
    """
    return _delete_and_rewrite(path, lambda con: _delete_values(con, values), timeout_s)


def erase_days(path: Path, days: list[str], timeout_s: float | None = None) -> dict[str, int]:
    """:func:`erase_values` for whole days (retention): every row whose ``date`` is one of ``days``,
    in every table with a ``date`` column. Returns rows deleted per table."""
    return _delete_and_rewrite(path, lambda con: _delete_days(con, days), timeout_s)


def _delete_and_rewrite(path: Path, delete, timeout_s: float | None) -> dict[str, int]:
    path = Path(path)
    if not path.exists():
        return {}
    timeout_s = WRITE_WAIT_S if timeout_s is None else timeout_s
    with writer_lock(path, timeout_s):
        remove_stale_temps(path.parent, path.name)
        with atomic_path(path) as fresh:
            fresh.unlink()  # DuckDB makes the file: an empty one is not a database
            con = _open(path, False, timeout_s)
            try:
                deleted = delete(con)
                con.execute("CHECKPOINT")  # nothing left in the WAL of the file about to be replaced
                source = con.execute("SELECT current_database()").fetchone()[0]
                con.execute(f"ATTACH {_quote(str(fresh))} AS erasure_copy")
                try:
                    con.execute(f'COPY FROM DATABASE "{source}" TO erasure_copy')
                finally:
                    con.execute("DETACH erasure_copy")
            finally:
                con.close()  # before the rename: the old file is closed, the new one complete
    return deleted


def _table_columns(con: duckdb.DuckDBPyConnection, where: str) -> list[tuple[str, str]]:
    """(table, column) of the base tables (not views) of this database's ``main`` schema (the
    publishing bookkeeping of ``_publish`` names files, not recordings) whose column matches ``where``."""
    return con.execute(
        "SELECT c.table_name, c.column_name FROM duckdb_columns() c JOIN duckdb_tables() t "
        "ON c.database_name = t.database_name AND c.schema_name = t.schema_name AND c.table_name = t.table_name "
        f"WHERE c.database_name = current_database() AND c.schema_name = 'main' AND {where} ORDER BY 1, 2"
    ).fetchall()


def _delete_days(con: duckdb.DuckDBPyConnection, days: list[str]) -> dict[str, int]:
    columns = _table_columns(con, "c.column_name = 'date' AND c.data_type = 'DATE'")
    return _delete_where(con, columns, "CAST(? AS DATE[])", days)


def _delete_values(con: duckdb.DuckDBPyConnection, values: list[str]) -> dict[str, int]:
    return _delete_where(con, _table_columns(con, "c.data_type = 'VARCHAR'"), "CAST(? AS VARCHAR[])", values)


def _delete_where(con, columns: list[tuple[str, str]], cast: str, values: list) -> dict[str, int]:
    """Delete the rows whose ``column`` is one of ``values`` from each (table, column), in one
    transaction that also records the days (a table without ``date``: the whole table) changed."""
    dated = {table for table, _ in _table_columns(con, "c.column_name = 'date' AND c.data_type = 'DATE'")}
    deleted: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table, column in columns:
            where = f'"{column}" IN (SELECT unnest({cast}))'
            if table in dated:
                days = con.execute(
                    f'SELECT DISTINCT CAST("date" AS VARCHAR) FROM "{table}" WHERE {where}', [values]
                ).fetchall()
            n = con.execute(f'DELETE FROM "{table}" WHERE {where}', [values]).fetchone()[0]
            if n:
                deleted[table] = deleted.get(table, 0) + n
                for (day,) in days if table in dated else [(None,)]:
                    record_change(con, table, day)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return deleted
