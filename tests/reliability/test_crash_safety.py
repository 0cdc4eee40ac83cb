"""Invariant 3: a run killed with SIGKILL in the middle of a writing stage leaves no partial Parquet
file visible to readers and no half-written DuckDB table; the next run of the day completes with
correct tables.

The kill is a real SIGKILL of a child process, sent by the child to itself at an exact point chosen by
test-only code in the child (a wrapper around the write, installed by the driver below): polling from
outside for a temporary file that lives a few milliseconds would hit the point only sometimes.
Nothing in the product knows about these points.
"""

import datetime as dt
import signal
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from emo_assets.jobs import REFIT_RUN_CONFIG
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.audio.resample import resample_day
from emo_assets.lib.store import lake, publish, warehouse
from emo_assets.lib.store.sql_models import SqlModel, materialize_sql_model

DAY = "2026-11-20"

# Test-only: ``die_on_commit(con)`` wraps a DuckDB connection so that COMMIT kills the process,
# i.e. after every statement of the transaction ran and before it is committed.
KILL_TOOLS = """
import os, signal, sys

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

class die_on_commit:
    def __init__(self, con):
        self._con = con
    def execute(self, sql, *args):
        if sql.strip().upper() == "COMMIT":
            die()
        return self._con.execute(sql, *args)
    def __getattr__(self, name):
        return getattr(self._con, name)
"""

LIB_DRIVER = KILL_TOOLS + textwrap.dedent(
    """
    import datetime
    from pathlib import Path
    import pyarrow as pa
    from emo_assets.lib.files import atomic
    from emo_assets.lib.store import lake
    from emo_assets.lib.store import warehouse, publish
    from emo_assets.lib.store.changes import record_change
    from emo_assets.lib.audio.load import stream_mono_16k, write_mono_16k_flac
    from emo_assets.lib.store.sql_models import SqlModel, materialize_sql_model

    point, root = sys.argv[1], Path(sys.argv[2])
    new = pa.table({"x": pa.array(range(1000, 1100), pa.int64())})
    if point == "lake_rename":
        atomic.os.replace = lambda *a: die()  # the new day is fully in its temporary file
        lake.write_partition(root / "lake", "t", "2026-11-20", new)
    elif point == "lake_write":
        def half_then_die(table, where, **kw):
            open(where, "wb").write(b"PAR1" + b"\\0" * 100)
            die()
        lake.pq.write_table = half_then_die
        lake.write_partition(root / "lake", "t", "2026-11-20", new)
    elif point == "flac":
        def blocks():
            for i, block in enumerate(stream_mono_16k(root / "in.wav")):
                if i == 2:
                    die()
                yield block
        write_mono_16k_flac(root / "out.flac", blocks())
    elif point == "replace_day":
        with warehouse.connect(root / "warehouse.duckdb") as con:
            dated = new.append_column("date", pa.array([datetime.date(2026, 11, 20)] * 100))
            warehouse.replace_day(die_on_commit(con), "t", "2026-11-20", dated)
    elif point == "sql_model":
        with warehouse.connect(root / "warehouse.duckdb") as con:
            model = SqlModel("m", root / "m.sql", "SELECT 42 AS answer FROM range(5)", ())
            materialize_sql_model(die_on_commit(con), model)
    elif point == "read_copy":
        with warehouse.connect(root / "warehouse.duckdb") as con:
            con.execute("INSERT INTO t VALUES (7, DATE '2026-11-20')")
            record_change(con, "t")
        # killed halfway through writing the new read copy: its views are made, not yet commented
        publish.warehouse.apply_comments = lambda con: die()
        publish.publish(root / "warehouse.duckdb", root / "lake")
    print("not killed")
    """
)


def _kill_at(rel, point: str, root) -> None:
    child = rel.python_child(LIB_DRIVER, point, str(root))
    out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, (point, out, err)


def _old_state(root) -> pa.Table:
    """Day 2026-11-20 of lake table ``t`` and of warehouse table ``t``, as an earlier run left them."""
    old = pa.table({"x": pa.array(range(10), pa.int64())})
    lake.write_partition(root / "lake", "t", DAY, old)
    with warehouse.connect(root / "warehouse.duckdb") as con:
        warehouse.replace_day(con, "t", DAY, _dated(list(range(10))))
        materialize_sql_model(con, SqlModel("m", root / "m.sql", "SELECT 1 AS answer", ()))
    publish.publish(root / "warehouse.duckdb", root / "lake")  # what the analysts see
    return old


def _duckdb_rows(path, sql: str) -> list[tuple]:
    if path.name == warehouse.read_copy_path(path.with_name("warehouse.duckdb")).name:
        con = warehouse.open_read_copy(path.parent)  # its views read files relative to the data directory
    else:
        con = duckdb.connect(str(path), read_only=str(path) != ":memory:")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("point", ["lake_write", "lake_rename"])
def test_killed_lake_write_leaves_the_old_day_visible(tmp_path, rel, point):
    old = _old_state(tmp_path)
    _kill_at(rel, point, tmp_path)
    assert lake.read_partition(tmp_path / "lake", "t", DAY).equals(old)
    glob = lake.table_glob(tmp_path / "lake", "t")
    assert _duckdb_rows(Path(":memory:"), f"SELECT count(*), sum(x) FROM read_parquet('{glob}')") == [(10, 45)]
    assert rel.leftover_temp_files(tmp_path)  # the killed writer's temporary file is there, unseen
    new = pa.table({"x": pa.array([5], pa.int64())})
    lake.write_partition(tmp_path / "lake", "t", DAY, new)  # the next run of the day
    assert lake.read_partition(tmp_path / "lake", "t", DAY).equals(new)
    assert rel.leftover_temp_files(tmp_path) == []


def _dated(values: list[int]) -> pa.Table:
    return pa.table({"x": pa.array(values, pa.int64()), "date": pa.array([dt.date.fromisoformat(DAY)] * len(values))})


@pytest.mark.parametrize("point", ["replace_day", "sql_model", "read_copy"])
def test_killed_warehouse_write_leaves_no_half_table(tmp_path, rel, point):
    _old_state(tmp_path)
    _kill_at(rel, point, tmp_path)
    pipeline_file = tmp_path / "warehouse.duckdb"
    read_copy = warehouse.read_copy_path(pipeline_file)
    # killed while publishing the read copy: the pipeline's transaction had committed (11 rows)
    committed = [(11, 52)] if point == "read_copy" else [(10, 45)]
    assert _duckdb_rows(pipeline_file, "SELECT count(*), sum(x) FROM t") == committed
    assert _duckdb_rows(read_copy, "SELECT count(*), sum(x) FROM t") == [(10, 45)]  # whole, old
    for path in (pipeline_file, read_copy):
        assert _duckdb_rows(path, "SELECT * FROM m") == [(1,)], path
    # The next writer is not blocked by the dead one and completes.
    with warehouse.connect(pipeline_file) as con:
        warehouse.replace_day(con, "t", DAY, _dated([3]))
    publish.publish(pipeline_file, tmp_path / "lake")  # the next run's end
    assert _duckdb_rows(read_copy, "SELECT x FROM t") == [(3,)]
    assert rel.leftover_temp_files(tmp_path) == []


def test_killed_flac_write_leaves_no_flac_and_the_next_run_sweeps_it(tmp_path, rel):
    raw_root = tmp_path / "raw"
    rel.write_small_day(raw_root / DAY, n=1, seconds=20.0)
    (tmp_path / "in.wav").write_bytes((raw_root / DAY / "call_00.wav").read_bytes())
    _kill_at(rel, "flac", tmp_path)
    assert not (tmp_path / "out.flac").exists()
    assert [p.name for p in tmp_path.glob(".out.flac.*.tmp")]  # the half-written temporary file
    files = ingest_day(raw_root, DAY, dt.datetime(2026, 11, 20, tzinfo=dt.UTC)).rows
    out = resample_day(files.slice(0, 1), raw_root, tmp_path, DAY, workers=1)  # the next run
    assert out.rows.column("duration_s").to_pylist() == [20.0]
    assert list(tmp_path.glob(".out.flac.*.tmp")) == []


def test_killed_emo_run_recovers_to_the_reference_tables(tmp_path, tiny_model_dir, rel, reference_day):
    """Kill `emo run` inside the resampled_audio stage (a FLAC half written) and inside the DuckDB
    transaction of emotion_clusters; after each, readers see whole files and whole tables, and the
    next run of the day gives exactly the tables of a run that was never interrupted."""
    ref_dir, ref_tables, _ = reference_day
    day_dir = tmp_path / "raw" / DAY
    paths = rel.write_small_day(day_dir)
    late = paths[-1].read_bytes()
    paths[-1].unlink()
    assert rel.materialize(tmp_path, tiny_model_dir).success  # an earlier run with one file fewer
    before = rel.warehouse_tables(tmp_path)
    paths[-1].write_bytes(late)  # a late file lands; the next run is killed twice

    driver = KILL_TOOLS + textwrap.dedent(
        """
        from emo_assets import cli
        from emo_assets.lib.audio import resample as preprocess
        from emo_assets.lib.store import warehouse
        point = sys.argv[1]
        if point == "resample":
            real = preprocess.write_mono_16k_flac
            def killed_midway(path, blocks):
                def some_blocks():
                    yield next(iter(blocks))
                    die()
                return real(path, some_blocks())
            preprocess.write_mono_16k_flac = killed_midway
        else:
            real = warehouse.replace_day
            def killed_before_commit(con, table, day, rows):
                if table == "emotion_clusters":
                    con = die_on_commit(con)
                return real(con, table, day, rows)
            warehouse.replace_day = killed_before_commit
        sys.exit(cli.main(["run", "--date", sys.argv[2], "--data-dir", sys.argv[3], "--model", sys.argv[4], "--device", "cpu"]))
        """
    )
    for point in ("resample", "clusters"):
        child = rel.python_child(driver, point, DAY, str(tmp_path), str(tiny_model_dir))
        out, err = child.communicate(timeout=300)
        assert child.returncode == -signal.SIGKILL, (point, out[-2000:], err[-3000:])
        for path in (tmp_path / "lake").rglob("*.parquet"):
            pq.read_table(path)  # every visible Parquet file is whole
        after_kill = rel.warehouse_tables(tmp_path, read_copy=False)
        assert after_kill["emotion_clusters"] == before["emotion_clusters"], point  # old day, not half a new one
        for flac in (tmp_path / "resampled").rglob("*.flac"):
            sf.read(flac)  # every visible FLAC is whole
        if point == "resample":
            assert any(".flac." in p for p in rel.leftover_temp_files(tmp_path))  # the half one, hidden

    # The next run of the day. The models are kept once fitted, and the earlier run fitted them on
    # one recording fewer than the reference did: this run refits them on the same recordings, which
    # gives the reference's model versions (a version is a hash of the fit).
    result = rel.materialize(tmp_path, tiny_model_dir, run_config=REFIT_RUN_CONFIG)
    assert result.success, rel.step_failure_messages(result)
    assert rel.portable(rel.warehouse_tables(tmp_path), tmp_path) == rel.portable(ref_tables, ref_dir)
    assert rel.leftover_temp_files(tmp_path) == []
    rel.assert_no_duplicates(tmp_path)
