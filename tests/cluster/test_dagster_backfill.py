"""A 3-day backfill of daily_emotion_job through Dagster on the cluster's Postgres: launched through the
webserver's GraphQL API (what the UI's launchpad sends), turned into queued runs by the daemon (at most
one run per day partition), executed by run workers; all of them share one instance, and every day
ends in the tables.

The test gets a database of its own on the cluster's Postgres server, so it never mixes with the runs
of `make cluster-up`'s instance, and drops it afterwards. The backfill is launched with no run config,
as the UI does: the job's own executor (in-process, one process per run) runs each day.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy
import yaml

from emo_assets.lib.audio.sample_day import BROKEN_SAMPLE, NO_SPEECH_SAMPLE, SPOKEN, write_sample_day
from emo_assets.lib.store import warehouse
from emo_assets.resources import PROJECT_ROOT

pytestmark = pytest.mark.cluster

DAYS = ["2026-11-20", "2026-11-21", "2026-11-22"]
RUNS_TIMEOUT_S = 720  # 3 runs at once on 2 shared cores: about 4 min each under heavy load
BIN = Path(sys.executable).parent
DAILY_TABLES = [
    "audio_files",
    "resampled_audio",
    "emotion_scores",
    "emotion_embeddings",
    "emotion_segments",
    "quarantine",
    "emotion_clusters",
    "satisfaction_predictions",
    "daily_emotion_summary",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_database(cluster_env):
    """A fresh database on the cluster's Postgres server: its name, dropped after the test."""
    name = f"dagster_backfill_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(cluster_env["EMO_PG_URL"], isolation_level="AUTOCOMMIT")
    with engine.connect() as con:
        con.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with engine.connect() as con:
            con.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture
def dagster_home(cluster_env, postgres_database, tmp_path) -> Path:
    """The cluster's dagster.yaml (queue limits and Postgres storage) pointed at the test's database."""
    config = yaml.safe_load((Path(cluster_env["DAGSTER_HOME"]) / "dagster.yaml").read_text())
    config["storage"]["postgres"]["postgres_db"]["db_name"] = postgres_database
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


class Services:
    """Long-running processes of the test, each in its own session, stopped with their children."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.procs = env, log_dir, {}

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs[name] = (
            subprocess.Popen(
                args, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            ),
            log,
        )

    def check_alive(self) -> None:
        for name, (proc, _) in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 4000) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        for proc, _log in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever is left in the session (a code server, a run worker) was started here
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            log.close()


def _graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GraphQL {exc.code}: {exc.read().decode(errors='replace')[:3000]}") from exc
    assert "errors" not in body, body
    return body["data"]


LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
  }
}"""

PARTITION_SETS = """
query {
  repositoriesOrError {
    ... on RepositoryConnection { nodes { name location { name } partitionSets { name pipelineName } } }
  }
}"""

RUNS = """
query ($backfillId: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $backfillId}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


def _wait_for_webserver(port: int, services: Services, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        services.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                return
        except OSError:
            assert time.monotonic() < deadline, (
                f"webserver did not answer in {timeout_s} s:\n{services.tail('webserver')}"
            )
            time.sleep(1)


def _published_days(data_dir: Path) -> set[str]:
    """The days of emotion_scores in the analysts' read copy (none before the first publish)."""
    try:
        con = warehouse.open_read_copy(data_dir)
    except FileNotFoundError:
        return set()
    try:
        return {str(d) for (d,) in con.execute("SELECT DISTINCT date FROM emotion_scores").fetchall()}
    finally:
        con.close()


def test_three_day_backfill_runs_once_per_day_on_postgres(
    cluster_env, dagster_home, postgres_database, tiny_model_dir, tmp_path
):
    data_dir = tmp_path / "data"
    for seed, day in enumerate(DAYS):
        write_sample_day(data_dir / "raw" / day, seed=seed)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "EMO_DATA_DIR": str(data_dir),
        "EMO_MODEL": str(tiny_model_dir),
        "EMO_DEVICE": "cpu",
    }
    web_port = _free_port()
    services = Services(env, tmp_path)
    try:
        services.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        services.start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(web_port)],
        )
        _wait_for_webserver(web_port, services)
        (repository,) = _graphql(web_port, PARTITION_SETS, {})["repositoriesOrError"]["nodes"]
        (partition_set,) = [p["name"] for p in repository["partitionSets"] if p["pipelineName"] == "daily_emotion_job"]
        started = time.monotonic()
        params = {
            "selector": {
                "partitionSetName": partition_set,
                "repositorySelector": {
                    "repositoryName": repository["name"],
                    "repositoryLocationName": repository["location"]["name"],
                },
            },
            "partitionNames": DAYS,
        }
        launched = _graphql(web_port, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            runs_filter = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
            deadline = time.monotonic() + RUNS_TIMEOUT_S
            while True:
                services.check_alive()
                runs = instance.get_runs(runs_filter)
                if len(runs) == len(DAYS) and all(run.is_finished for run in runs):
                    break
                assert time.monotonic() < deadline, (
                    f"runs not finished after {RUNS_TIMEOUT_S} s: {[(r.tags.get('dagster/partition'), r.status) for r in runs]}"
                    f"\n{services.tail('daemon')}"
                )
                time.sleep(2)
            elapsed = time.monotonic() - started
            print(f"backfill of {len(DAYS)} days: {elapsed:.1f} s from launch to the last run finished")

            # One successful run per day, all recorded in the Postgres instance.
            partitions = Counter(run.tags["dagster/partition"] for run in runs)
            assert partitions == Counter(DAYS)
            assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}, [
                (run.tags["dagster/partition"], run.status) for run in runs
            ]
            for run in runs:
                assert run.job_name == "daily_emotion_job"
                stats = instance.get_run_stats(run.run_id)
                print(f"  {run.tags['dagster/partition']}: {stats.end_time - stats.start_time:.1f} s")
            run_ids = {run.run_id for run in runs}

        # The rows themselves are in Postgres: the run table and the event log of this database.
        engine = sqlalchemy.create_engine(cluster_env["EMO_PG_URL"].rsplit("/", 1)[0] + f"/{postgres_database}")
        try:
            with engine.connect() as con:
                stored = con.execute(sqlalchemy.text("SELECT run_id, partition, status FROM runs")).all()
                events = con.execute(sqlalchemy.text("SELECT run_id, count(*) FROM event_logs GROUP BY run_id")).all()
        finally:
            engine.dispose()
        assert sorted((p, s) for r, p, s in stored if r in run_ids) == [(day, "SUCCESS") for day in DAYS]
        assert {r for r, n in events if n > 0} >= run_ids

        # The webserver reads the same instance: the UI lists the three runs.
        listed = _graphql(web_port, RUNS, {"backfillId": backfill_id})["runsOrError"]["results"]
        assert {r["runId"] for r in listed} == run_ids
        assert {r["status"] for r in listed} == {"SUCCESS"}

        # The daemon's run-status sensors publish each finished run (checked every 5 s): the last
        # run's publish may come after the run is seen finished, so wait for it before stopping.
        deadline = time.monotonic() + RUNS_TIMEOUT_S
        while (published := _published_days(data_dir)) != set(DAYS):
            assert time.monotonic() < deadline, f"published days {published}\n{services.tail('daemon')}"
            time.sleep(2)
    finally:
        services.stop()

    # Every table holds all three days: the sample day's voices (each side of a two-voice call on its
    # own), its broken upload and its line with no speech quarantined.
    con = warehouse.open_read_copy(data_dir)
    try:
        days = {
            table: {str(d) for (d,) in con.execute(f'SELECT DISTINCT date FROM "{table}"').fetchall()}
            for table in DAILY_TABLES
        }
        scores = dict(con.execute("SELECT date::VARCHAR, count(*) FROM emotion_scores GROUP BY ALL").fetchall())
        quarantined = con.execute("SELECT date::VARCHAR, source_path FROM quarantine ORDER BY ALL").fetchall()
    finally:
        con.close()
    assert days == {table: set(DAYS) for table in DAILY_TABLES}
    voices = sum(2 if rec.speech == "call" else 1 for rec in SPOKEN)
    assert scores == {day: voices for day in DAYS}
    assert quarantined == [(day, f"{day}/{path}") for day in DAYS for path in sorted([BROKEN_SAMPLE, NO_SPEECH_SAMPLE])]
