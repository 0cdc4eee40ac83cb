#!/usr/bin/env bash
# make test-cluster: the tests of tests/cluster/ against the loopback cluster. Starts the cluster unless
# it is up already (and then stops it again); a cluster that cannot start fails, it is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

if [ ! -f data/cluster/env.sh ]; then
  SECONDS=0
  cluster/up.sh
  echo "cluster: up in ${SECONDS} s"
  trap 'SECONDS=0; cluster/down.sh; echo "cluster: down in ${SECONDS} s"' EXIT
else
  cluster/up.sh  # says so if it is up, fails if it is half up
fi
EMO_CLUSTER_REQUIRED=1 "$PY" -m pytest -q --durations=5 -m cluster tests/cluster "$@"
