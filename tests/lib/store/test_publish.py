"""Publishing the analysts' copy (lib/store/publish.py): what changed is written, one version at a
time, relative to the data directory, never from a corrupt warehouse."""

import datetime as dt
import os
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from emo_assets.lib.store import changes, day_lock, lake, publish, warehouse

DAYS = [f"2026-11-{d:02d}" for d in range(1, 8)]


def _rows(day: str, n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng([seed, int(day[-2:])])
    return pa.table(
        {
            "audio_id": [f"{day}-{i}" for i in range(n)],
            "date": pa.array([dt.date.fromisoformat(day)] * n),
            "model_id": ["m"] * n,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 4, dtype=np.float32)), 4),
        }
    )


def _audio_files(day: str, n: int) -> pa.Table:
    return pa.table(
        {"source_path": [f"{day}/call_{i}.wav" for i in range(n)], "date": [dt.date.fromisoformat(day)] * n}
    )


def _write_day(data_dir, day: str, n: int, seed: int = 0) -> None:
    """A day as a run writes it: lake tables, then a warehouse table."""
    lake.write_partition(data_dir / "lake", "audio_files", day, _audio_files(day, n))
    lake.write_partition(data_dir / "lake", "emotion_embeddings", day, _rows(day, n, seed))
    with warehouse.connect(data_dir / "warehouse.duckdb") as con:
        warehouse.replace_index_day(con, day, _rows(day, n, seed))


@pytest.fixture()
def data_dir(tmp_path):
    data = tmp_path / "data"
    for i, day in enumerate(DAYS):
        _write_day(data, day, n=3 + i)
    publish.publish(data / "warehouse.duckdb", data / "lake", grace_s=0)
    return data


COUNTS = (
    "SELECT (SELECT count(*) FROM audio_files WHERE date = DATE '{day}'), "
    "(SELECT count(*) FROM emotion_embeddings WHERE date = DATE '{day}'), "
    "(SELECT count(*) FROM embedding_index WHERE date = DATE '{day}')"
)


def _counts(data_dir, day: str) -> tuple:
    con = warehouse.open_read_copy(data_dir)
    try:
        return con.execute(COUNTS.format(day=day)).fetchone()
    finally:
        con.close()


def test_publishing_a_day_writes_only_that_days_files(data_dir):
    day = DAYS[3]
    _write_day(data_dir, day, n=20, seed=1)
    done = publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", grace_s=0)
    # one file per table that has the day: two lake tables linked, one warehouse day exported
    assert sorted(f.split("/")[1] for f in done.written) == ["audio_files", "embedding_index", "emotion_embeddings"]
    assert all(f"/date={day}/" in f for f in done.written)
    assert len(done.removed) == 3  # the day's previous files, no longer referenced (grace 0)
    assert _counts(data_dir, day) == (20, 20, 20)
    assert _counts(data_dir, DAYS[0]) == (3, 3, 3)  # other days as they were
    # nothing changed: nothing written
    assert publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", grace_s=0).written == ()


def test_lake_files_are_hard_links_frozen_when_the_lake_day_is_replaced(data_dir):
    day = DAYS[0]
    lake_file = lake.partition_file(data_dir / "lake", "audio_files", day)
    published = [p for p in (data_dir / "published" / "audio_files" / f"date={day}").iterdir()]
    assert len(published) == 1 and os.path.samefile(published[0], lake_file)
    lake.write_partition(data_dir / "lake", "audio_files", day, _audio_files(day, 50))
    assert _counts(data_dir, day)[0] == 3  # the lake changed, the published version did not


def test_a_reader_sees_one_version_until_the_next_publish(data_dir):
    """A run writes its tables one after another; a reader sees none of it until the run publishes."""
    day = DAYS[-1]
    before = _counts(data_dir, day)
    reader = warehouse.open_read_copy(data_dir)  # opened before the run
    lake.write_partition(data_dir / "lake", "audio_files", day, _audio_files(day, 40))  # the run's first table
    assert _counts(data_dir, day) == before  # half a run is not visible
    lake.write_partition(data_dir / "lake", "emotion_embeddings", day, _rows(day, 40))
    with warehouse.connect(data_dir / "warehouse.duckdb") as con:
        warehouse.replace_index_day(con, day, _rows(day, 40))
    assert _counts(data_dir, day) == before
    publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake")  # the run's end (default grace)
    assert _counts(data_dir, day) == (40, 40, 40)  # every table of the new version agrees
    assert reader.execute(COUNTS.format(day=day)).fetchone() == before  # the open reader keeps its version
    reader.close()


def test_the_read_copy_works_from_any_directory_and_holds_no_absolute_path(data_dir, tmp_path):
    assert str(data_dir).encode() not in warehouse.read_copy_path(data_dir / "warehouse.duckdb").read_bytes()
    code = (
        "import sys; from pathlib import Path; from emo_assets.lib.store import warehouse; "
        "print(warehouse.open_read_copy(Path(sys.argv[1])).execute('SELECT count(*) FROM embedding_index').fetchone()[0])"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", code, os.path.relpath(data_dir, elsewhere)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == sum(3 + i for i in range(len(DAYS)))
    # A raw DuckDB in the data directory, as the README says: `cd data && duckdb warehouse_read.duckdb`
    shell = subprocess.run(
        [sys.executable, "-c", "import duckdb; print(duckdb.connect('warehouse_read.duckdb', read_only=True)"
         ".execute('SELECT count(*) FROM audio_files').fetchone()[0])"],
        cwd=data_dir, capture_output=True, text=True,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert int(shell.stdout) == sum(3 + i for i in range(len(DAYS)))


def test_a_copied_data_directory_reads_its_own_files_only(data_dir, tmp_path):
    copy = tmp_path / "data2"
    shutil.copytree(data_dir, copy, symlinks=True)
    shutil.rmtree(copy / "lake")
    shutil.rmtree(copy / "published")
    with pytest.raises(FileNotFoundError, match="published"):
        warehouse.open_read_copy(copy)  # fails clearly, never reads data/'s files
    # A whole copy reads its own files, even with the original gone.
    whole = tmp_path / "data3"
    shutil.copytree(data_dir, whole, symlinks=True)
    shutil.rmtree(data_dir)
    assert _counts(whole, DAYS[2]) == (5, 5, 5)


def test_a_copy_whose_published_files_differ_reads_its_own(data_dir, tmp_path):
    copy = tmp_path / "data2"
    shutil.copytree(data_dir, copy, symlinks=True)
    for day in DAYS:
        _write_day(data_dir, day, n=30)  # the original moves on
    publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", grace_s=0)
    assert _counts(data_dir, DAYS[0]) == (30, 30, 30)
    assert _counts(copy, DAYS[0]) == (3, 3, 3)


def test_superseded_files_are_kept_for_the_grace_period(data_dir):
    day = DAYS[1]
    old = sorted((data_dir / "published" / "embedding_index" / f"date={day}").iterdir())
    _write_day(data_dir, day, n=9, seed=2)
    done = publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", grace_s=3600)
    assert done.removed == () and all(p.exists() for p in old)  # a reader of the old copy still needs them
    done = publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", grace_s=0)
    assert not any(p.exists() for p in old)
    assert str(old[0].relative_to(data_dir)) in done.removed


def _corrupt_middle(path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(8192))


def test_a_corrupt_warehouse_is_never_published(tmp_path):
    data = tmp_path / "data"
    db = data / "warehouse.duckdb"
    data.mkdir()
    with warehouse.connect(db) as con:  # one big day: the middle of the file is its blocks
        con.execute(
            "CREATE TABLE emotion_clusters AS SELECT DATE '2026-11-01' AS date, random() AS a, random() AS b, "
            "random() AS c FROM range(400000)"
        )
        changes.record_change(con, "emotion_clusters")
    publish.publish(db, data / "lake")
    read_copy = warehouse.read_copy_path(db)
    published = read_copy.read_bytes()
    _corrupt_middle(db)
    with pytest.raises(warehouse.WarehouseCorruptError) as failure:
        with warehouse.connect(db) as con:
            changes.record_change(con, "emotion_clusters", "2026-11-01")  # a run replaced the day
        publish.publish(db, data / "lake")
    message = str(failure.value)
    assert str(db) in message and "emo rebuild" in message and "was not replaced" in message
    assert read_copy.read_bytes() == published  # the analysts keep the healthy copy
    assert warehouse.corrupt_marker(db).exists()
    with pytest.raises(warehouse.WarehouseCorruptError, match="emo rebuild"):
        publish.publish(db, data / "lake")  # and every later publish refuses until it is rebuilt
    assert read_copy.read_bytes() == published


def test_verify_reads_every_block(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    with warehouse.connect(db) as con:
        con.execute("CREATE TABLE t AS SELECT random() AS a, random() AS b FROM range(400000)")
    warehouse.verify(db)
    _corrupt_middle(db)
    with pytest.raises(warehouse.WarehouseCorruptError, match="emo rebuild"):
        warehouse.verify(db)


def test_writers_record_what_changed_in_the_same_transaction(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    with warehouse.connect(db) as con:
        warehouse.replace_index_day(con, DAYS[0], _rows(DAYS[0], 2))
        warehouse.replace_table(con, "emotion_clusters", _rows(DAYS[1], 2))
        assert changes.pending(con) == {"embedding_index": {DAYS[0]}, "emotion_clusters": {None}}
        with pytest.raises(duckdb.Error):
            warehouse.replace_day(con, "embedding_index", DAYS[2], pa.table({"nope": [1]}))
        assert changes.pending(con) == {"embedding_index": {DAYS[0]}, "emotion_clusters": {None}}  # rolled back


def test_a_day_another_run_is_writing_is_left_as_published(data_dir):
    """Run A ends while run B is halfway through its day: A's publish leaves B's day as it was."""
    day_a, day_b = DAYS[0], DAYS[1]
    _write_day(data_dir, day_a, n=11)  # run A, whole
    lake.write_partition(data_dir / "lake", "audio_files", day_b, _audio_files(day_b, 12))  # run B, half
    lake.write_partition(data_dir / "lake", "emotion_embeddings", day_b, _rows(day_b, 12))
    with warehouse.connect(data_dir / "warehouse.duckdb") as con:
        warehouse.replace_index_day(con, day_b, _rows(day_b, 12))
    locks = data_dir / "locks"
    with day_lock.hold_day(locks, day_b, holder="run B"):
        in_flight = day_lock.days_in_flight(locks, lambda run_id: False)
    assert in_flight == set()  # this process's own run is never "another run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DAY, str(locks), day_b], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        in_flight = day_lock.days_in_flight(locks, lambda run_id: False)
        assert in_flight == {day_b}
        publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", in_flight=in_flight)  # run A's end
    finally:
        holder.communicate("")
    assert _counts(data_dir, day_a) == (11, 11, 11)
    assert _counts(data_dir, day_b) == (4, 4, 4)  # as published before run B started
    with warehouse.connect(data_dir / "warehouse.duckdb") as con:
        assert changes.pending(con) == {"embedding_index": {day_b}}  # left for run B's own publish
    publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake")  # run B's end
    assert _counts(data_dir, day_b) == (12, 12, 12)


HOLD_DAY = (
    "import sys; from pathlib import Path; from emo_assets.lib.store import day_lock\n"
    "with day_lock.hold_day(Path(sys.argv[1]), sys.argv[2], holder='emo run'):\n"
    "    print('held', flush=True); sys.stdin.read()\n"
)


def test_an_emptied_day_leaves_the_published_tables(data_dir):
    day = DAYS[2]
    with warehouse.connect(data_dir / "warehouse.duckdb") as con:
        warehouse.replace_index_day(con, day, _rows(day, 0))
    for table in ("audio_files", "emotion_embeddings"):
        lake.partition_file(data_dir / "lake", table, day).unlink()
    done = publish.publish(data_dir / "warehouse.duckdb", data_dir / "lake", grace_s=0)
    assert done.written == () and len(done.removed) == 3
    assert _counts(data_dir, day) == (0, 0, 0)
    assert _counts(data_dir, DAYS[3]) == (6, 6, 6)
