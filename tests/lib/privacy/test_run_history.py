"""Rewriting a run history's text (lib/privacy/run_history.py): only what names an erased
recording changes, JSON stays JSON, and no free page of a SQLite file keeps the old text."""

from __future__ import annotations

import json

import sqlalchemy as sa

from emo_assets.lib.privacy import run_history

VICTIM = "ab" * 32
OTHER = "cd" * 32


def test_a_source_path_is_matched_whole_and_never_inside_a_json_escape():
    found = run_history.needles([], ["2026-01-01/87.wav"])
    event = json.dumps(
        {
            "message": "deferred: ['2026-01-01/87.wav', '2026-01-01/187.wav', '2026-01-01/中文87.wav', '2026-01-01/日.wav']"
        }
    )  # ASCII-only, as Dagster stores it: 中 is \u4e2d, 日 is \u65e5
    scrubbed = found.sub(event)
    assert json.loads(scrubbed)["message"] == (
        "deferred: ['erased', '2026-01-01/187.wav', '2026-01-01/中文87.wav', '2026-01-01/日.wav']"
    )
    escaped = run_history.needles([], ["2026-01-01/中.wav"])  # found as JSON writes it, and as text
    assert json.loads(escaped.sub(json.dumps({"m": "2026-01-01/中.wav"}))) == {"m": "erased"}
    assert escaped.sub("2026-01-01/中.wav") == "erased"


def test_an_id_is_matched_from_its_prefix_and_no_further_than_its_length():
    found = run_history.needles([VICTIM], [])
    assert found.sub(f"| {VICTIM[:12]}… | {VICTIM} | {OTHER} |") == f"| erased… | erased | {OTHER} |"
    assert found.sub("f" + VICTIM) == "f" + VICTIM  # inside a longer hex run: another value
    assert found.sub(VICTIM + "0123") == "erased0123"  # at most 64 hex characters are the id
    assert run_history.needles([], []) is None  # nothing to look for: nothing is matched, not everything


def test_rows_naming_the_recording_are_rewritten_and_the_file_keeps_no_old_copy(tmp_path):
    path = tmp_path / "index.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    meta = sa.MetaData()
    events = sa.Table("event_logs", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("event", sa.Text))
    keys = sa.Table("asset_keys", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("last", sa.Text))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA secure_delete = OFF")  # as a SQLite built without it behaves
        conn.execute(events.insert(), [{"event": f"preview {VICTIM[:12]}…"}, {"event": f"kept {OTHER}"}])
        conn.execute(keys.insert(), [{"last": f"repaired {VICTIM}"}])
        conn.execute(keys.update().values(last="a later materialization"))  # the old text is in a free page
    assert VICTIM[:12].encode() in path.read_bytes()

    found = run_history.needles([VICTIM], [])
    with engine.begin() as conn:
        changed = run_history.scrub_database(conn, found)
    run_history.compact(engine, set(changed))
    assert changed == {"event_logs": 1}
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(sa.select(events.c.event))] == ["preview erased…", f"kept {OTHER}"]
    assert VICTIM[:12].encode() not in path.read_bytes()
    engine.dispose()
