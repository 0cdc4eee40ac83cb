"""The loopback cluster of `make cluster-up`, as the tests see it: the variables of data/cluster/env.sh.

Plain `pytest` skips these tests while the cluster is down; `make test-cluster` starts the cluster and
sets EMO_CLUSTER_REQUIRED=1, so there a missing cluster fails them instead.
"""

from __future__ import annotations

import os
import shlex

import pytest

from emo_assets.resources import PROJECT_ROOT

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
    return read_env_file(ENV_FILE)
