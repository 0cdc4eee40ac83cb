"""The warehouse is derived state and the analysts read one published version (issue 12 items 2, 4
and 8): a corrupt or deleted warehouse.duckdb is rebuilt from the lake for every day, a corrupt one
is never published over the analysts' copy, a reader sees one version of every table during a run,
and a copied data directory reads only its own files."""

import os
import shutil
import subprocess
import threading
import time

import duckdb
import pytest

from emo_assets.lib.store import warehouse
from tests.helpers import DAY, EMO, OTHER_DAY

DAILY = ("emotion_clusters", "satisfaction_predictions", "embedding_index", "emotion_scores", "audio_files")


def _rows(data_dir, sql: str) -> list[tuple]:
    con = warehouse.open_read_copy(data_dir)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture()
def two_days(tmp_path, tiny_model_dir, rel):
    """Two days run and published; returns the analysts' tables after them."""
    rel.write_small_day(tmp_path / "raw" / DAY, n=3, seed=0)
    rel.write_small_day(tmp_path / "raw" / OTHER_DAY, n=4, seed=1)
    for day in (DAY, OTHER_DAY):
        result = rel.materialize(tmp_path, tiny_model_dir, day=day)
        assert result.success, rel.step_failure_messages(result)
    for table in DAILY:
        days = {str(row[0]) for row in _rows(tmp_path, f'SELECT DISTINCT "date" FROM {table}')}
        assert days == {DAY, OTHER_DAY}, table
    return rel.warehouse_tables(tmp_path)


def _garble(path, start: int, length: int | None = None) -> None:
    """Overwrite ``length`` bytes (default: to the end) from ``start`` with random bytes."""
    size = path.stat().st_size
    length = size - start if length is None else length
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(os.urandom(length))


def test_a_corrupt_warehouse_is_never_published_and_the_next_run_rebuilds_every_day(
    tmp_path, tiny_model_dir, rel, two_days
):
    pipeline_file = tmp_path / "warehouse.duckdb"
    read_copy = warehouse.read_copy_path(pipeline_file)
    published = read_copy.read_bytes()
    _garble(pipeline_file, 3 * 4096)  # every block after DuckDB's file headers
    with pytest.raises(warehouse.WarehouseCorruptError) as failure:
        rel.publish_run(tmp_path)  # a run's end
    message = str(failure.value)
    assert str(pipeline_file) in message and "emo rebuild" in message and "was not replaced" in message
    assert read_copy.read_bytes() == published  # the analysts keep the healthy copy
    assert rel.warehouse_tables(tmp_path) == two_days

    result = rel.materialize(tmp_path, tiny_model_dir, day=OTHER_DAY)  # the next run, of one day
    assert result.success, rel.step_failure_messages(result)
    warehouse.verify(pipeline_file)
    assert not warehouse.corrupt_marker(pipeline_file).exists()
    assert rel.warehouse_tables(tmp_path) == two_days  # every day, not only the day that ran


def test_a_deleted_warehouse_is_rebuilt_for_every_day(tmp_path, tiny_model_dir, rel, two_days):
    (tmp_path / "warehouse.duckdb").unlink()
    result = rel.materialize(tmp_path, tiny_model_dir, day=OTHER_DAY)
    assert result.success, rel.step_failure_messages(result)
    assert rel.warehouse_tables(tmp_path) == two_days


def test_emo_rebuild_rebuilds_a_corrupt_warehouse_from_the_lake(tmp_path, rel, two_days):
    pipeline_file = tmp_path / "warehouse.duckdb"
    _garble(pipeline_file, pipeline_file.stat().st_size // 2, 8192)  # 8 KB in the middle, as in the issue
    done = subprocess.run(
        [EMO, "rebuild", "--data-dir", str(tmp_path)], env=rel.emo_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "2 day(s)" in done.stdout and "emotion_clusters" in done.stdout and "published version" in done.stdout
    warehouse.verify(pipeline_file)
    assert rel.warehouse_tables(tmp_path) == two_days


COUNTS = (
    "SELECT (SELECT count(*) FROM audio_files), (SELECT count(*) FROM emotion_scores), "
    "(SELECT count(*) FROM embedding_index), (SELECT count(*) FROM emotion_clusters), "
    "(SELECT count(*) FROM satisfaction_predictions)"
)


def test_a_reader_of_the_read_copy_sees_one_version_of_every_table(tmp_path, tiny_model_dir, rel):
    rel.write_small_day(tmp_path / "raw" / DAY, n=3, seed=0)
    assert rel.materialize(tmp_path, tiny_model_dir, day=DAY).success
    before = _rows(tmp_path, COUNTS)[0]
    rel.write_small_day(tmp_path / "raw" / OTHER_DAY, n=5, seed=1)
    seen: set[tuple] = set()
    errors: list[Exception] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.add(_rows(tmp_path, COUNTS)[0])
            except duckdb.Error as exc:  # any error reading the published copy is a failure too
                errors.append(exc)
            time.sleep(0.01)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        result = rel.materialize(tmp_path, tiny_model_dir, day=OTHER_DAY)  # runs, then publishes
    finally:
        stop.set()
        reader.join()
    assert result.success, rel.step_failure_messages(result)
    after = _rows(tmp_path, COUNTS)[0]
    assert after != before and not errors
    assert before in seen  # the reader was reading while the day ran
    assert seen <= {before, after}, f"mixed versions seen: {sorted(seen - {before, after})}"
    assert len(set(after)) == 1  # every table of the version holds every recording of both days


def test_a_copied_data_directory_never_reads_the_originals_files(tmp_path, tiny_model_dir, rel):
    data = tmp_path / "data"
    rel.write_small_day(data / "raw" / DAY, n=3, seed=0)
    assert rel.materialize(data, tiny_model_dir, day=DAY).success
    copy = tmp_path / "data2"
    shutil.copytree(data, copy, symlinks=True)  # cp -a data data2
    shutil.rmtree(copy / "lake")
    shutil.rmtree(copy / "published")
    with pytest.raises(FileNotFoundError, match="emo rebuild"):
        warehouse.open_read_copy(copy)
    shutil.rmtree(copy)
    shutil.copytree(data, copy, symlinks=True)
    rel.write_small_day(data / "raw" / OTHER_DAY, n=2, seed=1)
    assert rel.materialize(data, tiny_model_dir, day=OTHER_DAY).success  # the original moves on
    assert _rows(copy, "SELECT count(*) FROM emotion_scores") == [(3,)]
    assert _rows(data, "SELECT count(*) FROM emotion_scores") == [(5,)]
