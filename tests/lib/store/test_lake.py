"""Lake files per table and day, partitions written batch by batch; each stage's quarantine rows
gathered into one table."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


SCHEMA = pa.schema([("audio_id", pa.string()), ("frame", pa.int32())])


def _batches(n: int, fail_after: int | None = None):
    for i in range(n):
        if fail_after is not None and i == fail_after:
            raise RuntimeError("the model stopped")
        yield pa.record_batch({"audio_id": [f"a{i}"] * 3, "frame": pa.array([0, 1, 2], pa.int32())}, schema=SCHEMA)


def test_batches_are_written_as_one_partition(tmp_path):
    path, rows = lake.write_partition_batches(tmp_path, "emotion_frames", "2026-11-20", _batches(4), SCHEMA)
    assert rows == 12 and path == lake.partition_file(tmp_path, "emotion_frames", "2026-11-20")
    table = pq.read_table(path)
    assert table.schema == SCHEMA and table.column("audio_id").to_pylist() == [
        f"a{i}" for i in range(4) for _ in range(3)
    ]


def test_a_failure_midway_keeps_the_old_day(tmp_path):
    path, _ = lake.write_partition_batches(tmp_path, "emotion_frames", "2026-11-20", _batches(2), SCHEMA)
    with pytest.raises(RuntimeError, match="the model stopped"):
        lake.write_partition_batches(tmp_path, "emotion_frames", "2026-11-20", _batches(5, fail_after=3), SCHEMA)
    assert pq.read_table(path).num_rows == 6
    assert [p.name for p in path.parent.iterdir()] == [path.name]
