"""The loopback cluster of `make cluster-up`, as the tests see it: the variables of data/cluster/env.sh.

Plain `pytest` skips these tests while the cluster is down; `make test-cluster` starts the cluster and
sets EMO_CLUSTER_REQUIRED=1, so there a missing cluster fails them instead.
"""

from __future__ import annotations

import os
import shlex
import uuid
from pathlib import Path

import pytest
import sqlalchemy
import yaml

from emo_assets.resources import PROJECT_ROOT
from tests.cluster.services import AWS_VARS, emo_run, finish, lake_env
from tests.helpers import DAY, write_small_day

ENV_FILE = PROJECT_ROOT / "data" / "cluster" / "env.sh"


def read_env_file(path) -> dict[str, str]:
    """The variables of ``export A=1 B=2`` lines (comments and blank lines ignored)."""
    env = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            env.update(word.split("=", 1) for word in words[1:])
    return env


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    if not ENV_FILE.exists():
        message = f"the loopback cluster is not up ({ENV_FILE} missing): `make cluster-up`, or `make test-cluster`"
        if os.environ.get("EMO_CLUSTER_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    env = read_env_file(ENV_FILE)
    # dagster.yaml reads the database password from the environment, as a deployment's should:
    # this process and the children it starts (with os.environ) open the instance with it
    os.environ.setdefault("DAGSTER_PG_PASSWORD", env["DAGSTER_PG_PASSWORD"])
    return env


@pytest.fixture
def s3_lake(cluster_env, monkeypatch) -> str:
    """A fresh prefix in the cluster's bucket; this process reads it with the cluster's endpoint."""
    for name in AWS_VARS:
        monkeypatch.setenv(name, cluster_env[name])
    return f"{cluster_env['EMO_LAKE_URI']}/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def local_day(cluster_env, tiny_model_dir, tmp_path_factory) -> Path:
    """The small day run by `emo run` on the local lake (EMO_LAKE_URI unset): the reference."""
    data_dir = tmp_path_factory.mktemp("local")
    write_small_day(data_dir / "raw" / DAY)
    code, out, err = finish(emo_run(data_dir, tiny_model_dir, lake_env(cluster_env, None)))
    assert code == 0, err[-3000:]
    return data_dir


@pytest.fixture
def postgres_database(cluster_env):
    """A fresh database on the cluster's Postgres server: its name, dropped after the test."""
    name = f"dagster_test_{uuid.uuid4().hex[:12]}"
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
    """The cluster's dagster.yaml (queue limits, run monitoring and retries, Postgres storage) pointed
    at the test's own database."""
    config = yaml.safe_load((Path(cluster_env["DAGSTER_HOME"]) / "dagster.yaml").read_text())
    config["storage"]["postgres"]["postgres_db"]["db_name"] = postgres_database
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home
