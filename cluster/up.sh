#!/usr/bin/env bash
# A cluster on loopback, offline: Postgres (Dagster's instance), an S3 server (moto), a Ray head on
# 127.0.0.2 and a second Ray node on 127.0.0.3. Everything it starts is recorded under data/cluster/
# (pid files, logs) and cluster/down.sh stops exactly that. Writes data/cluster/env.sh.
#
#   PYTHON=.venv/bin/python cluster/up.sh      (or: make cluster-up)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/data/cluster
PY=${PYTHON:-$ROOT/.venv/bin/python}
BIN=$(dirname "$PY")
BUCKET=emo-lake
# Ray rewrites 127.0.0.1 to the machine's routable address; other loopback addresses stay put.
HEAD_IP=127.0.0.2
NODE_IP=127.0.0.3
CPUS_PER_NODE=${EMO_CLUSTER_CPUS_PER_NODE:-1}
OBJECT_STORE_BYTES=$((256 * 1024 * 1024))
# Room for one model actor per node (Ray inference places its actors by this resource on CPU nodes).
MODEL_SLOTS='{"emo_model": 1}'

export RAY_USAGE_STATS_ENABLED=0             # no phoning home
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 # a test cluster stops at once on SIGTERM

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ -f "$DIR/env.sh" ]; then
  if alive "$DIR/pids/ray-node.pid" && alive "$DIR/pids/ray-head.pid" && alive "$DIR/pids/s3.pid" \
    && alive "$DIR/pids/postgres.pid"; then
    echo "cluster: already up (. $DIR/env.sh); stop it with make cluster-down"
    exit 0
  fi
  echo "cluster: $DIR/env.sh exists but some components are gone: run make cluster-down first" >&2
  exit 1
fi

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$PG_BIN/initdb" ] || { echo "cluster: PostgreSQL server not installed (make cluster-up installs it)" >&2; exit 1; }
[ -x "$BIN/ray" ] && [ -x "$BIN/moto_server" ] || {
  echo "cluster: ray or moto_server missing in $BIN (pip install -e '.[cluster]', or make cluster-up)" >&2
  exit 1
}

mkdir -p "$DIR/pids" "$DIR/logs"
trap 'echo "cluster: start failed; stopping what was started (logs in $DIR/logs)" >&2; "$ROOT/cluster/down.sh"' ERR

read -r PG_PORT S3_PORT RAY_PORT DASH_PORT CLIENT_PORT AGENT_PORT_HEAD AGENT_PORT_NODE < <("$PY" cluster/ready.py ports 7)

# --- Postgres: initdb once into data/cluster/pg. Postgres refuses to run as root, so root runs it in a
# user namespace as the `postgres` user of Debian's package: its files stay root's, wherever the clone is.
if [ "$(id -u)" = 0 ]; then AS_PG=(unshare --map-user=postgres --map-group=postgres); else AS_PG=(); fi
mkdir -p "$DIR/pg"
chmod 700 "$DIR/pg"
if [ ! -f "$DIR/pg.password" ]; then
  (umask 077 && "$PY" -c "import secrets; print(secrets.token_hex(16))" >"$DIR/pg.password")
fi
PG_PASSWORD=$(cat "$DIR/pg.password")
if [ ! -f "$DIR/pg/PG_VERSION" ]; then
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$DIR/pg" -U dagster --pwfile="$DIR/pg.password" \
    --auth=scram-sha-256 --encoding=UTF8 --locale=C >"$DIR/logs/initdb.log"
fi
# TCP on 127.0.0.1 only, no unix socket (its default directory belongs to the system's Postgres).
setsid "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/logs/postgres.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=''" start >/dev/null
head -n 1 "$DIR/pg/postmaster.pid" >"$DIR/pids/postgres.pid"
export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=dagster PGPASSWORD=$PG_PASSWORD
if [ -z "$("$PG_BIN/psql" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'dagster'")" ]; then
  "$PG_BIN/createdb" dagster
fi
echo "cluster: postgres on 127.0.0.1:$PG_PORT (data in $DIR/pg)"

# --- S3: moto's server. Its state is in memory; it records every request it serves to
# s3-recording.jsonl, and cluster/s3.sh replays them when it restarts the server, so objects
# survive a restart of the S3 server as on a real store (cluster-down/up starts empty).
export AWS_ACCESS_KEY_ID=emo-cluster AWS_SECRET_ACCESS_KEY=emo-cluster AWS_DEFAULT_REGION=us-east-1
echo "$S3_PORT" >"$DIR/s3.port"
rm -f "$DIR/s3-recording.jsonl"
MOTO_ENABLE_RECORDING=True MOTO_RECORDER_FILEPATH="$DIR/s3-recording.jsonl" \
  setsid "$PY" cluster/moto_server_recorded.py -H 127.0.0.1 -p "$S3_PORT" >"$DIR/logs/s3.log" 2>&1 &
echo $! >"$DIR/pids/s3.pid"
"$PY" cluster/ready.py s3 "http://127.0.0.1:$S3_PORT" "$BUCKET"
echo "cluster: S3 (moto) on http://127.0.0.1:$S3_PORT, bucket $BUCKET"
# The Ray nodes' tasks read an S3 lake (EMO_LAKE_URI) with the credentials above and this endpoint.
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT
export FSSPEC_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT

# --- Ray: `ray start --block` in its own session; its processes die with it (kernel fate-sharing).
# A short temp dir: Ray's unix socket paths must stay under 108 characters.
RAY_TMP=$(mktemp -d /tmp/emo-ray.XXXXXX)
echo "$RAY_TMP" >"$DIR/ray.tmpdir"
setsid "$BIN/ray" start --head --block --disable-usage-stats --node-ip-address=$HEAD_IP --port="$RAY_PORT" \
  --num-cpus="$CPUS_PER_NODE" --resources="$MODEL_SLOTS" --object-store-memory=$OBJECT_STORE_BYTES --temp-dir="$RAY_TMP" \
  --dashboard-host=$HEAD_IP --dashboard-port="$DASH_PORT" --ray-client-server-port="$CLIENT_PORT" \
  --dashboard-agent-listen-port="$AGENT_PORT_HEAD" >"$DIR/logs/ray-head.log" 2>&1 &
echo $! >"$DIR/pids/ray-head.pid"
"$PY" cluster/ready.py ray "$HEAD_IP:$RAY_PORT" 1
setsid "$BIN/ray" start --block --disable-usage-stats --address="$HEAD_IP:$RAY_PORT" --node-ip-address=$NODE_IP \
  --num-cpus="$CPUS_PER_NODE" --resources="$MODEL_SLOTS" --object-store-memory=$OBJECT_STORE_BYTES \
  --dashboard-agent-listen-port="$AGENT_PORT_NODE" >"$DIR/logs/ray-node.log" 2>&1 &
echo $! >"$DIR/pids/ray-node.pid"
"$PY" cluster/ready.py ray "$HEAD_IP:$RAY_PORT" 2
echo "cluster: Ray head $HEAD_IP:$RAY_PORT + node $NODE_IP (dashboard http://$HEAD_IP:$DASH_PORT)"

# --- Dagster: the repository's instance settings (run queue, limits) with storage on Postgres.
mkdir -p "$DIR/dagster_home"
{
  cat dagster.yaml
  cat <<EOF
# Run storage, event log and schedule storage on Postgres (written by cluster/up.sh); the password
# comes from the environment (data/cluster/env.sh), never from this file.
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3: name the psycopg2 driver.
storage:
  postgres:
    postgres_db:
      scheme: postgresql+psycopg2
      username: dagster
      password:
        env: DAGSTER_PG_PASSWORD
      hostname: 127.0.0.1
      port: $PG_PORT
      db_name: dagster
EOF
} >"$DIR/dagster_home/dagster.yaml"
DAGSTER_HOME=$DIR/dagster_home DAGSTER_PG_PASSWORD=$PG_PASSWORD "$PY" cluster/ready.py dagster

(
  umask 077
  cat >"$DIR/env.sh" <<EOF
# The loopback cluster started by cluster/up.sh; \`make cluster-down\` stops it.
export DAGSTER_HOME=$DIR/dagster_home DAGSTER_PG_PASSWORD=$PG_PASSWORD
export EMO_PG_URL=postgresql+psycopg2://dagster:$PG_PASSWORD@127.0.0.1:$PG_PORT/dagster
export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=dagster PGPASSWORD=$PG_PASSWORD PGDATABASE=dagster
export EMO_RAY_ADDRESS=$HEAD_IP:$RAY_PORT
export EMO_RAY_CLIENT_ADDRESS=ray://$HEAD_IP:$CLIENT_PORT
export RAY_API_SERVER_ADDRESS=http://$HEAD_IP:$DASH_PORT
export RAY_USAGE_STATS_ENABLED=0
export EMO_LAKE_URI=s3://$BUCKET/lake
export AWS_ACCESS_KEY_ID=emo-cluster AWS_SECRET_ACCESS_KEY=emo-cluster AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$S3_PORT
export FSSPEC_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
EOF
)
trap - ERR
echo "cluster: up. Point emo, make ui and dagster at it with:  . $DIR/env.sh"
