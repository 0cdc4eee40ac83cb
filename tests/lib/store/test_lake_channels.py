"""Lake days written before speech turns and channels still read: the views carry the new columns
(NULL for old rows), and one row per recording is picked by channel."""

import datetime as dt

import duckdb
import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.store import lake, warehouse

OLD, NEW = "2026-11-01", "2026-11-02"


def _scores(day: str, rows: list[tuple[str, str | None]], with_channel: bool) -> pa.Table:
    date = dt.date.fromisoformat(day)
    out = []
    for audio_id, channel in rows:
        row = {"audio_id": audio_id, "date": date, "model_id": "m", "emotion": "happy", "confidence": 0.9}
        row.update({label: 0.9 if label == "happy" else 0.1 / 8 for label in schemas.EMOTION_LABELS})
        if with_channel:
            row["channel"] = channel
        out.append(row)
    schema = (
        schemas.EMOTION_SCORES
        if with_channel
        else pa.schema([f for f in schemas.EMOTION_SCORES if f.name != "channel"])
    )
    return pa.Table.from_pylist(out, schema=schema)


def _old_segments(day: str) -> pa.Table:
    old = pa.schema([f for f in schemas.EMOTION_SEGMENTS if f.name not in ("channel", "turn", "speech_share")])
    row = {"audio_id": "a", "date": dt.date.fromisoformat(day), "model_id": "m", "start_s": 0.0, "end_s": 2.0}
    row.update({"emotion": "sad", "confidence": 0.5, **{label: 1 / 9 for label in schemas.EMOTION_LABELS}})
    return pa.Table.from_pylist([row], schema=old)


def test_a_lake_of_old_days_only_has_the_new_columns_as_null(tmp_path):
    lake.write_partition(tmp_path, "emotion_scores", OLD, _scores(OLD, [("a", None)], with_channel=False))
    lake.write_partition(tmp_path, "emotion_segments", OLD, _old_segments(OLD))
    con = duckdb.connect()
    warehouse.refresh_lake_views(con, tmp_path)
    assert con.execute("SELECT audio_id, channel FROM emotion_scores").fetchall() == [("a", None)]
    assert con.execute("SELECT turn, speech_share, channel, start_s FROM emotion_segments").fetchall() == [
        (None, None, None, 0.0)
    ]
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'emotion_segments'"
        ).fetchall()
    )
    assert (types["turn"], types["speech_share"], types["channel"]) == ("INTEGER", "FLOAT", "VARCHAR")


def test_old_and_new_days_read_together_and_one_row_stands_for_a_call(tmp_path):
    lake.write_partition(tmp_path, "emotion_scores", OLD, _scores(OLD, [("a", None)], with_channel=False))
    new = _scores(NEW, [("b", "agent"), ("b", "customer"), ("c", "mono")], with_channel=True)
    lake.write_partition(tmp_path, "emotion_scores", NEW, new)
    con = duckdb.connect()
    warehouse.refresh_lake_views(con, tmp_path)
    rows = con.execute("SELECT audio_id, channel FROM emotion_scores ORDER BY ALL").fetchall()
    assert rows == [("a", None), ("b", "agent"), ("b", "customer"), ("c", "mono")]
    voice = lake.voice_rows(lake.read_table(tmp_path, "emotion_scores"))
    assert sorted(zip(voice.column("audio_id").to_pylist(), voice.column("channel").to_pylist())) == [
        ("a", None),
        ("b", "customer"),
        ("c", "mono"),
    ]


def test_the_published_read_copy_of_old_days_only_has_the_new_columns_as_null(tmp_path):
    from emo_assets.lib.store import publish

    lake.write_partition(tmp_path / "lake", "emotion_scores", OLD, _scores(OLD, [("a", None)], with_channel=False))
    lake.write_partition(tmp_path / "lake", "emotion_segments", OLD, _old_segments(OLD))
    publish.publish(tmp_path / "warehouse.duckdb", tmp_path / "lake")
    con = warehouse.open_read_copy(tmp_path)
    try:
        assert con.execute("SELECT audio_id, channel FROM emotion_scores").fetchall() == [("a", None)]
        assert con.execute("SELECT turn, speech_share, channel, start_s FROM emotion_segments").fetchall() == [
            (None, None, None, 0.0)
        ]
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'emotion_segments'"
            ).fetchall()
        )
    finally:
        con.close()
    assert (types["turn"], types["speech_share"], types["channel"]) == ("INTEGER", "FLOAT", "VARCHAR")
