"""Each component of the loopback cluster answers: Postgres, the S3 server, both Ray nodes, and
Dagster's instance on Postgres."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from emo_assets.resources import PROJECT_ROOT

pytestmark = pytest.mark.cluster


def test_postgres_accepts_a_connection(cluster_env):
    import sqlalchemy

    engine = sqlalchemy.create_engine(cluster_env["EMO_PG_URL"])
    try:
        with engine.connect() as con:
            version = con.execute(sqlalchemy.text("SHOW server_version")).scalar()
            listen = con.execute(sqlalchemy.text("SHOW listen_addresses")).scalar()
            database = con.execute(sqlalchemy.text("SELECT current_database()")).scalar()
    finally:
        engine.dispose()
    assert version and int(version.split(".")[0]) >= 13
    assert listen == "127.0.0.1"
    assert database == "dagster"


def test_s3_server_round_trips_an_object_through_s3fs(cluster_env):
    import s3fs

    fs = s3fs.S3FileSystem(
        endpoint_url=cluster_env["AWS_ENDPOINT_URL"],
        key=cluster_env["AWS_ACCESS_KEY_ID"],
        secret=cluster_env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )
    bucket_prefix = cluster_env["EMO_LAKE_URI"].removeprefix("s3://")
    path = f"{bucket_prefix}/health/{uuid.uuid4().hex}.bin"
    payload = bytes(range(256)) * 64
    try:
        fs.pipe(path, payload)
        assert fs.cat(path) == payload
        assert fs.info(path)["size"] == len(payload)
    finally:
        fs.rm(path)
    assert not fs.exists(path)


RAY_PROBE = """
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address={address!r}, log_to_driver=False, logging_level="WARNING")

@ray.remote(num_cpus=1)
def node_ip():
    return ray.util.get_node_ip_address()

try:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    on = [node_ip.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
          for n in nodes]
    print(sorted(n["NodeManagerAddress"] for n in nodes), sorted(ray.get(on, timeout=120)))
finally:
    ray.shutdown()
"""


def test_ray_has_two_nodes_and_runs_a_task_on_each(cluster_env):
    address = cluster_env["EMO_RAY_ADDRESS"]
    status = subprocess.run(
        [str(Path(sys.executable).with_name("ray")), "status", f"--address={address}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" node_") == 2, status.stdout  # two active nodes, none pending
    # A driver in its own process: ray.init leaves global state behind in the process that calls it.
    probe = subprocess.run(
        [sys.executable, "-c", RAY_PROBE.format(address=address)], capture_output=True, text=True, timeout=180
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    expected = ["127.0.0.2", "127.0.0.3"]
    assert probe.stdout.strip().splitlines()[-1] == f"{expected} {expected}"


def test_dagster_instance_stores_runs_on_postgres_with_the_repository_queue_limits(cluster_env):
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    repository_queue = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["run_queue"]
    with dg.DagsterInstance.from_config(cluster_env["DAGSTER_HOME"]) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        queue = instance.run_coordinator.get_run_queue_config()
        assert queue.max_concurrent_runs == repository_queue["max_concurrent_runs"]
        assert [dict(limit) for limit in queue.tag_concurrency_limits] == repository_queue["tag_concurrency_limits"]
        instance.get_runs(limit=1)  # the tables exist and answer
