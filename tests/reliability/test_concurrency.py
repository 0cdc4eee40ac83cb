"""Invariant 4: runs of different days at once all succeed; a second run of a day that is being
processed is refused with a clear message; analysts reading the warehouse never break a run."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from emo_assets.lib.store import lake, warehouse
from emo_assets.lib.store.accounting import account_day

DAY, OTHER_DAY, THIRD_DAY = "2026-11-20", "2026-11-21", "2026-11-22"
MULTIPROCESS_DAY = str(Path(__file__).with_name("multiprocess_day.py"))


def _instance(data_dir: Path) -> dg.DagsterInstance:
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    instance = dg.DagsterInstance.from_config(str(home))
    instance.get_runs(limit=1)  # create the SQLite schema once, before runs start in parallel
    return instance


def test_three_days_at_once(tmp_path, tiny_model_dir, rel, reference_day, monkeypatch):
    """A Dagster run with the multiprocess executor (one process per step) and two `emo run`
    processes, three days at once. (A second run of a day in progress is refused: test_day_lock.py,
    with a holder that keeps the day for as long as the test needs.)"""
    _, ref_tables, _ = reference_day
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for seed, day in enumerate((DAY, OTHER_DAY, THIRD_DAY)):
        rel.write_small_day(tmp_path / "raw" / day, seed=seed)
    _instance(tmp_path)
    env = rel.emo_env(EMO_DATA_DIR=str(tmp_path), EMO_MODEL=str(tiny_model_dir), EMO_DEVICE="cpu")
    dagster_run = subprocess.Popen(
        [sys.executable, MULTIPROCESS_DAY, DAY, str(tmp_path / "dagster_home")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    emo_runs = [rel.emo_run(tmp_path, tiny_model_dir, day) for day in (OTHER_DAY, THIRD_DAY)]
    children = [dagster_run, *emo_runs]
    try:
        outcomes = [(child.wait(timeout=400), child) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for code, child in outcomes:
        out, err = child.communicate()
        assert code == 0, (out[-2000:], err[-3000:])

    rel.assert_no_duplicates(tmp_path)
    tables = rel.warehouse_tables(tmp_path)
    for day in (DAY, OTHER_DAY, THIRD_DAY):
        account = account_day(
            tmp_path / "raw",
            day,
            *(lake.read_partition(tmp_path / "lake", t, day) for t in ("audio_files", "emotion_scores", "quarantine")),
        )
        assert len(account.landed) == 4 and len(account.processed) == 3 and len(account.quarantined) == 1
        assert account.missing == ()
    # The day run with the multiprocess executor, beside two other runs, equals the reference run.
    day_scores = [row for row in tables["emotion_scores"] if str(row[1]) == DAY]
    assert day_scores == ref_tables["emotion_scores"]
    assert {str(row[1]) for row in tables["emotion_clusters"]} == {DAY, OTHER_DAY, THIRD_DAY}
    # The three runs (one per process step) fitted each model once: one model_version per table.
    for table in ("emotion_clusters", "satisfaction_predictions"):
        assert len({row[-1] for row in tables[table]}) == 1, table


def _analyst(path: Path):
    """A child process holding a read-only DuckDB connection to ``path`` (a data directory: its read
    copy; a ``.duckdb`` file: that file) until its stdin closes; it prints the days of
    emotion_clusters it sees when it connects and again when it leaves."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import duckdb\n"
        "from emo_assets.lib.store import warehouse\n"
        "path = Path(sys.argv[1])\n"
        "con = duckdb.connect(str(path), read_only=True) if path.suffix else warehouse.open_read_copy(path)\n"
        "q = 'SELECT count(DISTINCT date) FROM emotion_clusters'\n"
        "print(con.execute(q).fetchone()[0], flush=True)\n"
        "sys.stdin.read()\n"
        "print(con.execute(q).fetchone()[0], flush=True)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_analyst_on_the_read_copy_never_blocks_the_pipeline(tmp_path, tiny_model_dir, rel):
    rel.write_small_day(tmp_path / "raw" / DAY)
    rel.write_small_day(tmp_path / "raw" / OTHER_DAY, seed=1)
    assert rel.materialize(tmp_path, tiny_model_dir, day=DAY).success
    analyst = _analyst(tmp_path)
    try:
        assert analyst.stdout.readline().strip() == "1"
        result = rel.materialize(tmp_path, tiny_model_dir, day=OTHER_DAY)  # while the analyst reads
        assert result.success, rel.step_failure_messages(result)
        out, _ = analyst.communicate("", timeout=60)
    finally:
        if analyst.poll() is None:
            analyst.kill()
    assert out.strip() == "1"  # the open connection kept the copy it opened
    con = warehouse.open_read_copy(tmp_path)
    assert con.execute("SELECT count(DISTINCT date) FROM emotion_clusters").fetchone()[0] == 2
    con.close()


def test_analyst_holding_the_pipeline_file_fails_only_warehouse_steps_clearly(
    tmp_path, tiny_model_dir, rel, monkeypatch
):
    rel.write_small_day(tmp_path / "raw" / DAY)
    assert rel.materialize(tmp_path, tiny_model_dir, day=DAY).success
    monkeypatch.setattr(warehouse, "WRITE_WAIT_S", 1.0)
    analyst = _analyst(tmp_path / "warehouse.duckdb")  # against the documented policy
    try:
        assert analyst.stdout.readline().strip() == "1"
        rel.write_small_day(tmp_path / "raw" / OTHER_DAY, seed=1)
        result = rel.materialize(tmp_path, tiny_model_dir, day=OTHER_DAY)
    finally:
        analyst.kill()
        analyst.communicate()
    failures = rel.step_failure_messages(result)
    assert "embedding_index" in failures
    message = failures["embedding_index"]
    assert "warehouse.duckdb is held by another process" in message and "warehouse_read.duckdb" in message
    # The lake stages before it completed; their files are there and whole.
    for table in ("audio_files", "resampled_audio", "emotion_scores", "emotion_embeddings"):
        assert lake.read_partition(tmp_path / "lake", table, OTHER_DAY).num_rows == 3, table
    # Once the analyst is gone, re-running the day completes and reuses the scores.
    monkeypatch.setattr(warehouse, "WRITE_WAIT_S", 120.0)
    result = rel.materialize(tmp_path, tiny_model_dir, day=OTHER_DAY)
    assert result.success
    assert result.asset_materializations_for_node("emotion_tables")[0].metadata["inferred"].value == 0
