"""A 3-day backfill of daily_emotion_job through Dagster on the cluster's Postgres: launched through the
webserver's GraphQL API (what the UI's launchpad sends), turned into queued runs by the daemon (at most
one run per day partition), executed by run workers; all of them share one instance, and every day
ends in the tables.

The test gets a database of its own on the cluster's Postgres server, so it never mixes with the runs
of `make cluster-up`'s instance, and drops it afterwards. The backfill is launched with no run config,
as the UI does: the job's own executor (in-process, one process per run) runs each day.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from emo_assets.lib.audio.sample_day import BROKEN_SAMPLE, NO_SPEECH_SAMPLE, SPOKEN, write_sample_day
from emo_assets.lib.store import warehouse
from tests.cluster.services import Services, free_port, graphql, published_days, wait_for_webserver

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
    web_port = free_port()
    services = Services(env, tmp_path)
    try:
        services.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        services.start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(web_port)],
        )
        wait_for_webserver(web_port, services)
        (repository,) = graphql(web_port, PARTITION_SETS, {})["repositoriesOrError"]["nodes"]
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
        launched = graphql(web_port, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
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
        listed = graphql(web_port, RUNS, {"backfillId": backfill_id})["runsOrError"]["results"]
        assert {r["runId"] for r in listed} == run_ids
        assert {r["status"] for r in listed} == {"SUCCESS"}

        # The daemon's run-status sensors publish each finished run (checked every 5 s): the last
        # run's publish may come after the run is seen finished, so wait for it before stopping.
        deadline = time.monotonic() + RUNS_TIMEOUT_S
        while (published := published_days(data_dir)) != set(DAYS):
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
