"""Lake files per table and day; each stage's quarantine rows gathered into one table."""

from emo_assets.lib import schemas
from emo_assets.lib.schemas import Stage, reject_rows
from emo_assets.lib.store import lake

DAY = "2026-11-20"


def test_gather_rejects_unites_every_stage_sorted(tmp_path):
    lake.write_rejects(
        tmp_path, Stage.EMOTION_SCORES, DAY, reject_rows(DAY, Stage.EMOTION_SCORES, [("b.wav", "x", "too short")])
    )
    lake.write_rejects(
        tmp_path,
        Stage.AUDIO_FILES,
        DAY,
        reject_rows(DAY, Stage.AUDIO_FILES, [("c.txt", None, "not audio"), ("a.wav", None, "empty")]),
    )
    rows = lake.gather_rejects(tmp_path, DAY)
    assert rows.schema.equals(schemas.QUARANTINE)
    assert [(r["source_path"], r["stage"]) for r in rows.to_pylist()] == [
        ("a.wav", "audio_files"),
        ("b.wav", "emotion_scores"),
        ("c.txt", "audio_files"),
    ]
    assert (tmp_path / "_rejects" / "audio_files" / f"date={DAY}").is_dir()  # the stage names the folder


def test_gather_rejects_of_a_day_without_any_is_empty_with_the_schema(tmp_path):
    rows = lake.gather_rejects(tmp_path, DAY)
    assert rows.num_rows == 0 and rows.schema.equals(schemas.QUARANTINE)
