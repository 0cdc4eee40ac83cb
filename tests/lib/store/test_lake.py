"""Lake files per table and day, partitions written batch by batch; each stage's quarantine rows
gathered into one table."""

from __future__ import annotations

import errno
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emo_assets.lib import schemas
from emo_assets.lib.files.faults import MachineFault
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


# Integrity: page checksums and a recorded SHA-256 per partition (issue 12 item 3)

ROWS = pa.table({"audio_id": [f"a{i}" for i in range(50)], "x": [float(i) for i in range(50)]})


def _flip(path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_partition_records_its_sha256_beside_the_tables_and_carries_page_checksums(tmp_path):
    path = lake.write_partition(tmp_path, "t", DAY, ROWS)
    record = tmp_path / "_checksums" / "t" / f"date={DAY}" / "part-0.parquet.sha256"
    assert lake.checksum_file(tmp_path, path) == record
    assert record.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # the table folder holds only Parquet
    assert lake.read_partition(tmp_path, "t", DAY).equals(ROWS)


def test_every_single_byte_flip_is_caught(tmp_path):
    path = lake.write_partition(tmp_path, "t", DAY, ROWS)
    original = path.read_bytes()
    for pos in range(len(original)):
        _flip(path, pos)
        with pytest.raises(lake.CorruptPartitionError, match="SHA-256"):
            lake.read_partition(tmp_path, "t", DAY)
        path.write_bytes(original)
    assert lake.read_partition(tmp_path, "t", DAY).equals(ROWS)


def test_without_its_recorded_sha256_a_flipped_data_page_fails_its_page_checksum(tmp_path):
    path = lake.write_partition(tmp_path, "t", DAY, ROWS)
    lake.checksum_file(tmp_path, path).unlink()  # a writer killed between the rename and the record
    assert lake.read_partition(tmp_path, "t", DAY).equals(ROWS)  # a whole file reads unverified by hash
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)  # the float column's pages
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    _flip(path, start + chunk.total_compressed_size - 4)  # the last bytes of its last page's data
    with pytest.raises(lake.CorruptPartitionError, match="CRC"):
        lake.read_partition(tmp_path, "t", DAY)


def test_a_truncated_partition_is_corrupt_and_set_aside_for_reuse(tmp_path):
    path = lake.write_partition(tmp_path, "t", DAY, ROWS)
    lake.checksum_file(tmp_path, path).unlink()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(lake.CorruptPartitionError, match="magic bytes") as caught:
        lake.read_partition(tmp_path, "t", DAY)
    assert str(path) in str(caught.value) and "re-run the day" in str(caught.value)
    reused = lake.read_reusable(tmp_path, "t", DAY)
    assert reused.rows is None and "magic bytes" in reused.corrupt
    assert lake.read_reusable(tmp_path, "t", DAY).corrupt  # still set aside until the stage rewrites it
    lake.write_partition(tmp_path, "t", DAY, ROWS)  # the stage recomputes and writes it
    assert lake.read_reusable(tmp_path, "t", DAY) == lake.Reused(lake.read_partition(tmp_path, "t", DAY), None)
    assert lake.read_reusable(tmp_path, "absent", DAY) == lake.Reused(None, None)


@pytest.mark.parametrize("where", ["file_sha256", "_parquet"])
def test_a_disk_that_cannot_be_read_is_the_machine_s_fault_not_corruption(tmp_path, monkeypatch, where):
    lake.write_partition(tmp_path, "t", DAY, ROWS)

    def io_error(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(args[0]))

    monkeypatch.setattr(lake, where, io_error)
    with pytest.raises(MachineFault, match="reading the lake failed at .*part-0.parquet: Input/output error"):
        lake.read_partition(tmp_path, "t", DAY)
    with pytest.raises(MachineFault):  # never set aside as corrupt: the data may well be fine
        lake.read_reusable(tmp_path, "t", DAY)


def test_read_table_verifies_every_day(tmp_path):
    lake.write_partition(tmp_path, "t", DAY, ROWS)
    other = lake.write_partition(tmp_path, "t", "2026-11-21", ROWS)
    _flip(other, other.stat().st_size // 2)
    with pytest.raises(lake.CorruptPartitionError, match="2026-11-21"):
        lake.read_table(tmp_path, "t")


def test_a_corrupt_deferred_record_makes_its_day_run_again(tmp_path):
    from emo_assets.lib.store.deferred import days_with_deferred, write_deferred

    empty = schemas.DEFERRED.empty_table()
    write_deferred(tmp_path, DAY, empty)
    write_deferred(tmp_path, "2026-11-21", empty)
    assert days_with_deferred(tmp_path) == []
    record = lake.partition_file(tmp_path, "_deferred", "2026-11-21")
    record.write_bytes(record.read_bytes()[:50])
    assert days_with_deferred(tmp_path) == ["2026-11-21"]  # not a schedule tick failing on every day


def test_a_full_disk_while_writing_is_the_machine_s_fault_and_keeps_the_old_day(tmp_path, monkeypatch):
    path = lake.write_partition(tmp_path, "t", DAY, ROWS)
    recorded = lake.recorded_sha256(tmp_path, path)

    def full(table, where, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lake.pq, "write_table", full)
    with pytest.raises(MachineFault, match="writing the lake failed at .*part-0.parquet: No space left on device"):
        lake.write_partition(tmp_path, "t", DAY, ROWS.slice(0, 1))
    assert lake.recorded_sha256(tmp_path, path) == recorded
    assert lake.read_partition(tmp_path, "t", DAY).equals(ROWS)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
