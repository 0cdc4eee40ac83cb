"""Erase recordings from Dagster's run history: its SQL databases and its compute logs.

A run's history names recordings where it must: a table preview (an ``audio_id`` cut to
:data:`PREFIX` characters, see assets/metadata.py), the ``audio_id``s a run repaired or a check
failed on, a warning naming a file (its ``source_path``, ``DAY/name``). An erasure rewrites each
such text to ``erased`` in every row of every table of the history's databases (reflected, so
whatever tables the Dagster version keeps) and in the compute logs, then compacts what it changed,
so that no free page or dead row version keeps the old text: SQLite files are rewritten (``VACUUM``)
and their write-ahead log truncated; Postgres tables are rewritten (``VACUUM FULL``).

No dagster here: the caller (cli_privacy.py) opens the instance's storages and hands over their
connections.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

PREFIX = 12  # the shortest cut of an audio_id a preview shows
ID_HEX = 64
ERASED = "erased"
LOCK_TIMEOUT_S = 120  # how long a table rewrite waits for Dagster's other users of the database
# A match never starts inside a JSON \uXXXX escape (Dagster stores events as ASCII-only JSON).
_NOT_IN_ESCAPE = r"(?<!\\u)(?<!\\u.)(?<!\\u..)(?<!\\u...)"


class RunHistoryError(RuntimeError):
    """The run history could not be rewritten (a database held, refused, or unreachable)."""


@dataclass(frozen=True)
class Needles:
    """What names the erased recordings in text: a regular expression, and the plain texts a
    database is first asked for (``LIKE``)."""

    pattern: re.Pattern
    literals: tuple[str, ...]

    def sub(self, text: str) -> str:
        return self.pattern.sub(ERASED, text)


def needles(audio_ids: list[str], sources: list[str]) -> Needles | None:
    """An id from its first :data:`PREFIX` characters on (never inside a longer hex run); a
    ``source_path`` as written and as JSON escapes it. None when there is nothing to look for."""
    forms, literals = [], []
    for audio_id in audio_ids:
        forms.append(rf"{_NOT_IN_ESCAPE}(?<![0-9a-f]){re.escape(audio_id[:PREFIX])}[0-9a-f]{{0,{ID_HEX - PREFIX}}}")
        literals.append(audio_id[:PREFIX])
    for source in sorted(set(sources)):
        for text in dict.fromkeys((source, json.dumps(source)[1:-1])):
            forms.append(_NOT_IN_ESCAPE + re.escape(text))
            literals.append(text)
    if not forms:
        return None
    return Needles(re.compile("|".join(forms)), tuple(dict.fromkeys(literals)))


def scrub_database(conn: sa.engine.Connection, found: Needles) -> dict[str, int]:
    """Rewrite, in the transaction the caller opened, every text naming an erased recording in
    every table of the database of ``conn``; returns the rows rewritten per table."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = ON")  # what this transaction frees is zeroed
    metadata = sa.MetaData()
    metadata.reflect(bind=conn)
    changed: dict[str, int] = {}
    for table in metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        texts = [c for c in table.columns if isinstance(c.type, sa.String) and c not in keys]
        if not keys or not texts:
            continue
        for column in texts:
            hit = sa.or_(*[column.contains(text, autoescape=True) for text in found.literals])
            for row in conn.execute(sa.select(*keys, column).where(hit)).fetchall():
                *key, text = row
                scrubbed = found.sub(text)
                if scrubbed == text:  # LIKE ignores case in SQLite: a near miss
                    continue
                where = sa.and_(*[k == v for k, v in zip(keys, key, strict=True)])
                conn.execute(table.update().where(where).values({column.name: scrubbed}))
                changed[table.name] = changed.get(table.name, 0) + 1
    return changed


def compact(engine: sa.engine.Engine, tables: set[str]) -> None:
    """Rewrite what held the old text. SQLite: the whole file (``VACUUM``: no free page keeps a
    former row, whatever ``secure_delete`` SQLite was built with), then its write-ahead log
    truncated, which fails when another process holds the file open mid-transaction. Postgres:
    each table (``VACUUM FULL``: dead row versions gone), waiting at most :data:`LOCK_TIMEOUT_S`."""
    if not tables:
        return
    try:
        with engine.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "sqlite":
                auto.exec_driver_sql("VACUUM")
                busy, _, _ = auto.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy:
                    raise RunHistoryError(
                        f"{engine.url.database}: another process holds the run history open, so its "
                        "write-ahead log cannot be cleared; stop it (dagster dev, a running run), then run "
                        "the same `emo erase` again"
                    )
                return
            auto.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
            for name in sorted(tables):
                owner = auto.execute(
                    sa.text("SELECT tableowner = current_user FROM pg_tables WHERE tablename = :t"), {"t": name}
                ).scalar()
                if not owner:
                    raise RunHistoryError(
                        f"Dagster's table {name} is not owned by this database user, which cannot rewrite it "
                        "(VACUUM FULL): run `emo erase` with the user that owns Dagster's tables"
                    )
                auto.exec_driver_sql(f'VACUUM FULL "{name}"')
    except sa.exc.SQLAlchemyError as exc:
        raise RunHistoryError(f"rewriting Dagster's run history failed: {type(exc).__name__}: {exc}") from exc


def scrub_text_files(folder: Path, found: Needles) -> int:
    """Rewrite every file under ``folder`` (compute logs) naming an erased recording; returns how many."""
    rewritten = 0
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
        scrubbed = found.sub(text)
        if scrubbed != text:
            tmp = path.with_name(path.name + ".erasing")
            tmp.write_bytes(scrubbed.encode("utf-8", errors="surrogateescape"))
            os.replace(tmp, path)
            rewritten += 1
    return rewritten
