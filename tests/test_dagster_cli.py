"""The standard `dagster` command line on our definitions, as a data engineer runs it: selection
strings parse (Dagster's selection grammar needs the antlr 4.13 runtime, see README "Dependency
pins"), a selection is materialized for one day, a backfill is queued, a launched day runs in the
run's own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from emo_assets.definitions import defs
from emo_assets.lib.store import lake
from tests.helpers import DAY, OTHER_DAY, REPO, write_small_day

DAGSTER = str(Path(sys.executable).with_name("dagster"))


@pytest.fixture
def dagster_env(tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    """A child's environment: its own Dagster instance and data directory, the tiny test model, and
    this checkout's package first on the path."""
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMO_", "DAGSTER_HOME"))}
    env.update(
        DAGSTER_HOME=str(tmp_path / "home"),
        EMO_DATA_DIR=str(tmp_path / "data"),
        EMO_MODEL=str(tiny_model_dir),
        EMO_DEVICE="cpu",
        EMO_SETTLE_S="0",  # the test day is written whole just before the run
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def dagster(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [DAGSTER, *args, "-m", "emo_assets.definitions"],
        capture_output=True,
        text=True,
        env=env,
        cwd=env["DAGSTER_HOME"],
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.parametrize(
    "selection, expected",
    [
        ("+resampled_audio", ["audio_files", "resampled_audio"]),
        ("group:audio", ["audio_files", "resampled_audio"]),
        ("key:emotion_clusters", ["emotion_clusters"]),
        ("key:emotion_scores", ["emotion_scores"]),
    ],
)
def test_asset_list_parses_selection_strings(dagster_env, selection, expected):
    listed = dagster(dagster_env, "asset", "list", "--select", selection).stdout.split()
    assert listed == expected


def test_asset_materialize_selects_one_day_of_the_audio_stage(dagster_env, tmp_path):
    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY)
    out = dagster(dagster_env, "asset", "materialize", "--select", "+resampled_audio", "--partition", DAY)
    assert "RUN_SUCCESS" in out.stdout + out.stderr

    resampled = lake.read_partition(data / "lake", "resampled_audio", DAY)
    assert resampled.num_rows == 3  # three recordings; notes.wav is quarantined
    assert [round(d, 2) for d in resampled.column("duration_s").to_pylist()] == [1.5, 1.5, 1.5]
    for path in resampled.column("path").to_pylist():
        assert (data / path).is_file() and path.endswith(".flac")  # relative to the data directory
    landed = lake.read_partition(data / "lake", "audio_files", DAY)  # notes.wav is no audio: rejected
    assert sorted(landed.column("source_path").to_pylist()) == [f"{DAY}/call_{i:02d}.wav" for i in range(3)]
    assert sorted(resampled.column("audio_id").to_pylist()) == sorted(landed.column("audio_id").to_pylist())
    # only the selection ran: nothing was scored
    assert lake.read_partition(data / "lake", "emotion_scores", DAY) is None

    with dg.DagsterInstance.from_config(dagster_env["DAGSTER_HOME"]) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("resampled_audio"))
        assert event is not None and event.asset_materialization.partition == DAY


def test_job_backfill_queues_one_run_per_day(dagster_env):
    out = dagster(
        dagster_env, "job", "backfill", "-j", "daily_emotion_job", "--partitions", f"{DAY},{OTHER_DAY}", "--noprompt"
    )
    assert "Launched backfill job" in out.stdout
    with dg.DagsterInstance.from_config(dagster_env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
    assert sorted(r.tags["dagster/partition"] for r in runs) == [DAY, OTHER_DAY]
    assert {r.job_name for r in runs} == {"daily_emotion_job"}
    assert len({r.tags["dagster/backfill"] for r in runs}) == 1
    # queued for the daemon (`dagster dev` runs one); none failed to launch
    assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}


# The instance of `dagster dev` without its daemon: a launched run starts at once, as from the UI.
LAUNCH_NOW_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""


def test_day_runs_execute_their_steps_in_the_run_process():
    definitions = defs()
    assert definitions.resolve_job_def("daily_emotion_job").executor_def is dg.in_process_executor
    assert definitions.resolve_job_def("models_job").executor_def is dg.in_process_executor
    # assets materialized from the UI's asset graph too
    assert definitions.resolve_implicit_global_asset_job_def().executor_def is dg.in_process_executor


def test_job_launch_runs_the_day_in_one_process(dagster_env, tmp_path):
    """`dagster job launch` goes through the instance's run launcher, like the UI, the schedule and
    the sensor: a new process runs the whole day, every step in it."""
    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY)
    home = Path(dagster_env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text(LAUNCH_NOW_YAML)
    tags = json.dumps({"dagster/partition": DAY})
    dagster(dagster_env, "job", "launch", "-j", "daily_emotion_job", "--tags", tags)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        deadline = time.monotonic() + 400
        while not (run := instance.get_run_by_id(run.run_id)).is_finished:
            assert time.monotonic() < deadline, f"the launched run is still {run.status}"
            time.sleep(0.5)
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.is_dagster_event]
    assert run.status == dg.DagsterRunStatus.SUCCESS, [e.message for e in events if e.is_failure]
    assert run.tags["dagster/partition"] == DAY
    step_events = [e for e in events if e.is_step_event]
    succeeded = {e.step_key for e in step_events if e.is_step_success}
    assert {"audio_files", "emotion_tables", "emotion_clusters"} <= succeeded
    assert len({e.pid for e in step_events}) == 1  # one process ran every step
    scores = lake.read_partition(data / "lake", "emotion_scores", DAY)
    assert scores.num_rows == 3  # three recordings; notes.wav is quarantined


def test_a_day_materialized_with_the_dagster_cli_is_published_by_emo_publish(dagster_env, tmp_path):
    """Without dagster-daemon no run-status sensor publishes the read copy: `emo sql` says so and
    names `emo publish`, which publishes it."""
    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY)
    dagster(dagster_env, "asset", "materialize", "--select", "*", "--partition", DAY)
    emo = str(Path(sys.executable).with_name("emo"))

    def run(*args):
        return subprocess.run([emo, *args], capture_output=True, text=True, env=dagster_env, timeout=600)

    query = ("sql", "SELECT 'rows=' || count(*) AS n FROM emotion_scores", "--data-dir", str(data))
    before = run(*query)
    assert before.returncode != 0 and "emo publish --data-dir" in before.stderr, before.stderr[-2000:]
    published = run("publish", "--data-dir", str(data))
    assert published.returncode == 0 and "published version 1" in published.stdout, published.stderr[-2000:]
    after = run(*query)
    assert after.returncode == 0 and "rows=3" in after.stdout, after.stdout + after.stderr[-2000:]
