"""A day's Dagster run killed with SIGKILL while it scores, on the cluster: Postgres instance, the lake
in the S3 bucket. The run is queued with `dagster job launch` and started by the daemon, as a
schedule's or the UI's run is; the test kills its run worker while it scores (a test-only hook
holds the first call of score_day, so the kill cannot come after the step). The instance then marks the run FAILURE
(the code server that started the worker reports its exit), the daemon retries it once from its first
step (run_retries in dagster.yaml, the job's ALL_STEPS retry strategy), the retry takes the day's lock
over from the dead run, because the instance says that run is finished, and completes; every lake
and warehouse table then equals an untouched `emo run` of the same day: nothing lost, nothing twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from emo_assets.lib.store import object_lock
from emo_assets.resources import PROJECT_ROOT
from tests.cluster.services import AWS_VARS, Services, day_tables, published_days
from tests.helpers import DAY, write_small_day

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
TIMEOUT_S = 600
SCORING_STEP = "emotion_tables"


# Test-only code for every process of the test's Dagster (a sitecustomize first on PYTHONPATH; the
# product knows nothing of it): the first call of score_day, in whichever process reaches it, writes
# the marker with its pid and blocks, so the run worker is killed while it scores, never after.
PAUSE_SCORING = """
import importlib.abc, importlib.util, os, sys, time


class PauseFirstScoring(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "emo_assets.lib.model.scoring":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            real = module.score_day

            def score_day(*args, **kwargs):
                try:
                    fd = os.open(os.environ["TEST_PAUSE_MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return real(*args, **kwargs)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                time.sleep(3600)

            module.score_day = score_day

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, PauseFirstScoring())
"""


def _events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list:
    return list(instance.all_logs(run_id, of_type=event_type))


def _step_events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> set[str]:
    return {entry.step_key for entry in _events(instance, run_id, event_type)}


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from the engine event its launcher writes ("Started process for run (pid: N).")."""
    for entry in _events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT):
        found = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
        if found:
            return int(found.group(1))
    return None


def _wait(what: str, services: Services, timeout_s: float, poll):
    deadline = time.monotonic() + timeout_s
    while True:
        services.check_alive()
        value = poll()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s\n{services.tail('daemon')}"
        time.sleep(0.5)


def test_a_run_killed_while_scoring_is_marked_failed_and_its_retry_gives_the_untouched_rows(
    cluster_env, dagster_home, s3_lake, local_day, tiny_model_dir, tmp_path
):
    data_dir = tmp_path / "data"
    write_small_day(data_dir / "raw" / DAY)
    hook, marker = tmp_path / "hook", tmp_path / "scoring-paused"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_SCORING)
    env = {
        **os.environ,
        **{name: cluster_env[name] for name in AWS_VARS},
        "DAGSTER_HOME": str(dagster_home),
        "EMO_DATA_DIR": str(data_dir),
        "EMO_LAKE_URI": s3_lake,
        "EMO_MODEL": str(tiny_model_dir),
        "EMO_DEVICE": "cpu",
        "EMO_SETTLE_S": "0",  # the day's files were all written before the launch
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        "TEST_PAUSE_MARKER": str(marker),
    }
    lock = object_lock.lock_uri(f"{s3_lake}/_locks", DAY)
    services = Services(env, tmp_path)
    try:
        services.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        launch = subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", "daily_emotion_job"]
            + ["--tags", json.dumps({"dagster/partition": DAY})],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert launch.returncode == 0, launch.stderr[-3000:]

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            (first,) = instance.get_runs(dg.RunsFilter(job_name="daily_emotion_job"))
            assert first.tags["dagster/partition"] == DAY
            assert first.tags["dagster/retry_strategy"] == "ALL_STEPS"

            # Kill the run worker while it scores the day (paused there by the test's hook).
            _wait("the run's scoring did not start", services, TIMEOUT_S, marker.exists)
            _wait("the marker was not written", services, 10, marker.read_text)
            pid = _worker_pid(instance, first.run_id)
            assert int(marker.read_text()) == pid  # the run worker itself, inside emotion_tables
            assert SCORING_STEP in _step_events(instance, first.run_id, dg.DagsterEventType.STEP_START)
            held = object_lock.read_lock(lock)  # claimed by the run's first step, in the worker's process
            assert held is not None and held[0]["run_id"] == first.run_id and held[0]["pid"] == pid
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            assert SCORING_STEP not in _step_events(instance, first.run_id, dg.DagsterEventType.STEP_SUCCESS)

            # The instance marks the dead run FAILURE, saying why.
            failed = _wait(
                "the killed run was not marked failed",
                services,
                120,
                lambda: (run := instance.get_run_by_id(first.run_id)).is_finished and run,
            )
            print(f"killed run marked {failed.status.value} after {time.monotonic() - killed_at:.1f} s")
            assert failed.status == dg.DagsterRunStatus.FAILURE
            messages = [e.message or "" for e in _events(instance, first.run_id, dg.DagsterEventType.ENGINE_EVENT)]
            assert any(f"process for {first.run_id} was terminated by signal 9 (SIGKILL)" in m for m in messages), (
                messages
            )
            assert SCORING_STEP not in _step_events(instance, first.run_id, dg.DagsterEventType.STEP_SUCCESS)

            # The daemon retries it once, every step again, through the queue.
            def retry_finished():
                runs = [
                    r
                    for r in instance.get_runs(dg.RunsFilter(job_name="daily_emotion_job"))
                    if r.run_id != first.run_id
                ]
                return runs if runs and all(r.is_finished for r in runs) else None

            (retry,) = _wait("the retry did not finish", services, TIMEOUT_S, retry_finished)
            print(f"retry {retry.status.value} {time.monotonic() - killed_at:.1f} s after the kill")
            assert retry.status == dg.DagsterRunStatus.SUCCESS, services.tail("daemon")
            assert retry.tags["dagster/partition"] == DAY
            assert retry.parent_run_id == first.run_id and retry.tags.get("dagster/retry_number") == "1"
            assert {"audio_files", SCORING_STEP} <= _step_events(
                instance, retry.run_id, dg.DagsterEventType.STEP_SUCCESS
            )
            # Its first step took the day's lock over from the dead run, because the instance said it was finished.
            logs = [e.user_message for e in instance.all_logs(retry.run_id)]
            assert any("took over the day lock" in m and f"its run {first.run_id} is finished" in m for m in logs), [
                m for m in logs if "lock" in m
            ]
            held = object_lock.read_lock(lock)
            assert held is not None and held[0]["run_id"] == retry.run_id

        # The run-status sensors publish the read copy after the retry's success.
        _wait("the retried day was not published", services, TIMEOUT_S, lambda: published_days(data_dir) == {DAY})
    finally:
        services.stop()

    killed_tables, untouched = day_tables(data_dir, s3_lake), day_tables(local_day, local_day / "lake")
    assert set(killed_tables) == set(untouched)
    for name, rows in untouched.items():
        assert killed_tables[name] == rows, name
    assert len(untouched["lake:emotion_scores"]) == 3 and len(untouched["lake:quarantine"]) == 1
