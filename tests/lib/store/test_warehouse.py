"""Waiting on a held warehouse file is logged, names the holder, and ends in our own advice."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from emo_assets.lib.store import publish, warehouse

LOGGER = "emo_assets.lib.store.warehouse"

HOLDER = (
    "import duckdb, sys, time\n"
    "from emo_assets.lib.store import warehouse\n"
    "path, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])\n"
    "if mode == 'analyst':\n"
    "    con = duckdb.connect(path, read_only=True)\n"
    "    print('holding', flush=True)\n"
    "    time.sleep(seconds)\n"
    "else:\n"
    "    with warehouse.connect(path) as con:\n"
    "        print('holding', flush=True)\n"
    "        time.sleep(seconds)\n"
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(path)).close()
    return path


def hold(path: Path, mode: str, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "holding"
    return child


def wait_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_a_held_file_is_logged_every_interval_with_the_holder_then_fails_with_our_advice(db, caplog, monkeypatch):
    monkeypatch.setattr(warehouse, "LOG_EVERY_S", 0.5)
    analyst = hold(db, "analyst", 30)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    started = time.monotonic()
    try:
        with pytest.raises(warehouse.WarehouseLockedError) as failure:
            with warehouse.connect(db, timeout_s=2.2):
                pass
    finally:
        analyst.kill()
        analyst.wait()
    assert time.monotonic() - started >= 2.2
    logs = wait_logs(caplog)
    # at once, then at the first retry 0.5 s or more later (retries back off: 0.05 s doubling to 2 s)
    assert 3 <= len(logs) <= 6, logs
    for line in logs:
        assert f"held by PID {analyst.pid} (" in line
        assert "Close that connection" in line and "warehouse_read.duckdb" in line
    assert "-c import duckdb" in logs[0]  # the holder's command line
    message = str(failure.value)
    assert f"{db} is held by another process" in message and f"PID {analyst.pid}" in message
    assert "warehouse_read.duckdb" in message and "re-run the day" in message
    assert "read-only mode" not in message and "-readonly" not in message
    assert failure.value.__cause__ is None  # DuckDB's message (and its hint) is not chained on


def test_the_wait_ends_when_the_holder_leaves(db, caplog, monkeypatch):
    monkeypatch.setattr(warehouse, "LOG_EVERY_S", 0.5)
    analyst = hold(db, "analyst", 1.5)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with warehouse.connect(db, timeout_s=60) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    analyst.wait()
    logs = wait_logs(caplog)
    assert logs and f"PID {analyst.pid}" in logs[0]
    publish.publish(db, db.parent / "lake")  # the read copy is published once, at the end of a run
    assert warehouse.open_read_copy(db.parent).sql("SELECT x FROM t").fetchall() == [(1,)]


def test_waiting_for_another_pipeline_writer_names_it(db, caplog, monkeypatch):
    monkeypatch.setattr(warehouse, "LOG_EVERY_S", 0.5)
    writer = hold(db, "writer", 1.5)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with warehouse.connect(db, timeout_s=60):
        pass
    writer.wait()
    logs = wait_logs(caplog)
    assert logs, "the wait on the writer lock was silent"
    assert f"pipeline writer PID {writer.pid} (" in logs[0] and "warehouse.duckdb.writer.lock" in logs[0]


@pytest.mark.parametrize(
    "duckdb_message, expected",
    [
        (
            'IO Error: Could not set lock on file "/d/w.duckdb": Conflicting lock is held in /usr/bin/python3 '
            "(PID 999999999). However, you would be able to open this database in read-only mode, e.g. by using "
            "the -readonly parameter in the CLI.",
            "PID 999999999 (/usr/bin/python3)",  # no /proc entry: the program DuckDB names
        ),
        (
            'IO Error: Could not set lock on file "/d/w.duckdb": Resource temporarily unavailable. However, you '
            "would be able to open this database in read-only mode",
            'IO Error: Could not set lock on file "/d/w.duckdb": Resource temporarily unavailable',
        ),
    ],
)
def test_lock_holder_keeps_who_and_drops_the_read_only_hint(duckdb_message, expected):
    assert warehouse.lock_holder(duckdb.IOException(duckdb_message)) == expected


def test_apply_comments_survives_recreated_views_and_writes_only_changes(tmp_path):
    from emo_assets.lib import schemas
    from emo_assets.lib.analytics.similarity import create_similarity_macros

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    warehouse.refresh_lake_views(con, tmp_path / "lake", embed_dim=4)
    create_similarity_macros(con)
    warehouse.apply_comments(con)

    def uncommented():
        return con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE comment IS NULL AND NOT internal"
        ).fetchall()

    assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()[0] >= 5
    assert uncommented() == []
    assert con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'quarantine'").fetchone()[0] == (
        "Every file of the day a stage could not process, with the stage and the reason."
    )
    warehouse.refresh_lake_views(con, tmp_path / "lake", embed_dim=4)  # CREATE OR REPLACE drops comments
    assert uncommented() != []
    warehouse.apply_comments(con)
    assert uncommented() == []
    macros = dict(
        con.execute(
            "SELECT function_name, comment FROM duckdb_functions() WHERE function_type = 'table_macro'"
        ).fetchall()
    )
    assert {name: macros[name] for name in schemas.MACROS} == schemas.MACROS
    con.close()
