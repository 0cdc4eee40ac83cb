"""Erase recordings from Dagster's run history: the event log, run and schedule storage, compute logs.

A run's history names recordings where it must: the preview of a table (an ``audio_id`` cut to 12
characters, see assets/metadata.py), the ``audio_id``s a run repaired or a check failed on, a log
line. An erasure rewrites every such text in the instance's own SQL storage, reached through
Dagster's storage objects (SQLite files of ``DAGSTER_HOME`` or Postgres alike): an ``audio_id``
(whole, or cut to any length from :data:`PREFIX` characters) becomes ``erased``, and so does the
file name it landed under. SQLite rewrites with ``secure_delete`` on, so no free page keeps the
old text; Postgres rewrites each changed table (``VACUUM FULL``). The instance's compute logs
(text files) are rewritten the same way.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import AbstractContextManager
from pathlib import Path

import sqlalchemy as sa

PREFIX = 12  # the shortest cut of an audio_id a preview shows
ERASED = "erased"


def pattern(audio_ids: list[str], names: set[str]) -> re.Pattern:
    """Text naming a recording: an id from its first :data:`PREFIX` characters on, or a file name
    (as written, and as JSON escapes it)."""
    forms = [re.escape(a[:PREFIX]) + "[0-9a-f]*" for a in audio_ids]
    for name in sorted(names):
        forms += [re.escape(name), re.escape(json.dumps(name)[1:-1])]
    return re.compile("|".join(dict.fromkeys(forms)))


def _connections(instance) -> list[AbstractContextManager]:
    """Every SQL connection holding the instance's history: each run's SQLite shard and the index
    (a Postgres instance: one database), the run storage, the schedule storage."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    events = instance.event_log_storage
    found = [events.index_connection()]
    if isinstance(events, SqliteEventLogStorage):
        found += [events.run_connection(run_id) for run_id in instance.get_run_ids()]
    found += [instance.run_storage.connect(), instance.schedule_storage.connect()]
    return found


def _scrub_connection(conn: sa.engine.Connection, needles: re.Pattern, literals: list[str]) -> list[str]:
    """Rewrite every text naming a recording in the database of ``conn`` (in the transaction
    Dagster's storage opened); returns the changed tables (a table once per rewritten row)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = ON")  # freed space is zeroed, not left holding the text
    metadata = sa.MetaData()
    metadata.reflect(bind=conn)
    changed = []
    for table in metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        texts = [c for c in table.columns if isinstance(c.type, sa.String) and c not in keys]
        if not keys or not texts:
            continue
        for column in texts:
            hit = sa.or_(*[column.contains(text, autoescape=True) for text in literals])
            for row in conn.execute(sa.select(*keys, column).where(hit)).fetchall():
                *key, text = row
                where = sa.and_(*[k == v for k, v in zip(keys, key, strict=True)])
                conn.execute(table.update().where(where).values({column.name: needles.sub(ERASED, text)}))
                changed.append(table.name)
    return changed


def _rewrite_tables(engine: sa.engine.Engine, tables: set[str]) -> None:
    """Postgres keeps an updated row's old version in the table's file until the table is rewritten.
    (SQLite zeroes it at once under ``secure_delete``; its write-ahead log is folded into the file
    when the storage closes its connection.)"""
    if engine.dialect.name == "sqlite" or not tables:
        return
    with engine.connect() as conn:
        autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
        for name in sorted(tables):
            autocommit.exec_driver_sql(f'VACUUM FULL "{name}"')


def _scrub_compute_logs(instance, needles: re.Pattern) -> int:
    base = getattr(instance.compute_log_manager, "_base_dir", None)
    if base is None or not Path(base).is_dir():
        return 0
    rewritten = 0
    for path in sorted(Path(base).rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", errors="surrogateescape")
        scrubbed = needles.sub(ERASED, text)
        if scrubbed != text:
            tmp = path.with_name(path.name + ".erasing")
            tmp.write_bytes(scrubbed.encode("utf-8", errors="surrogateescape"))
            os.replace(tmp, path)
            rewritten += 1
    return rewritten


def scrub(instance, audio_ids: list[str], names: set[str]) -> dict[str, int]:
    """Rewrite every record and compute log of ``instance`` naming one of ``audio_ids`` (or a file
    name in ``names``); returns counts."""
    needles = pattern(audio_ids, names)
    literals = [a[:PREFIX] for a in audio_ids] + [form for n in sorted(names) for form in (n, json.dumps(n)[1:-1])]
    records = 0
    for opened in _connections(instance):
        with opened as conn:
            changed = _scrub_connection(conn, needles, sorted(set(literals)))
            engine = conn.engine
        _rewrite_tables(engine, set(changed))
        records += len(changed)
    return {"run_history_records": records, "compute_log_files": _scrub_compute_logs(instance, needles)}
