# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CLUSTER_STAMP := $(VENV)/.cluster-stamp

.PHONY: test demo ui bench clean-data cluster-install cluster-up cluster-down test-cluster espeak-ng

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel; never let a resolver pick a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's espeak-ng speaks the demo day and the test days (lib/audio/spoken.py); checked on every
# `make test` and `make demo`, so a .venv made before it was needed still gets it.
espeak-ng:
	command -v espeak-ng >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng; }

test: $(STAMP) espeak-ng
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

demo: $(STAMP) espeak-ng
	$(BIN)/emo demo

# A DAGSTER_HOME already set (`. data/cluster/env.sh`: the cluster's Postgres instance) is kept.
ui: $(STAMP)
	test -n "$$DAGSTER_HOME" || (mkdir -p data/dagster_home && (test -f data/dagster_home/dagster.yaml || cp dagster.yaml data/dagster_home/dagster.yaml))
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/data/dagster_home} $(BIN)/dagster dev -w workspace.yaml

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py

# The cluster on loopback (README: "Beyond one machine"): Postgres, an S3 server, two Ray nodes.
$(CLUSTER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	touch $(CLUSTER_STAMP)

# Debian's PostgreSQL server when missing, without the package's own cluster (ours lives in data/cluster/pg).
cluster-install: $(CLUSTER_STAMP)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  mkdir -p /etc/postgresql-common/createcluster.d && \
	  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/emo-assets.conf && \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; }

cluster-up: cluster-install
	PYTHON=$(BIN)/python cluster/up.sh

cluster-down:
	cluster/down.sh

test-cluster: cluster-install
	PYTHON=$(BIN)/python cluster/test.sh
