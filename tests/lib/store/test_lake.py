"""Lake partitions written batch by batch."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emo_assets.lib.store import lake

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
