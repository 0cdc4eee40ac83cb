#!/usr/bin/env bash
# The cluster's S3 server alone, for fault tests and for trying what a restart does to a run:
#
#   cluster/s3.sh stop       stop the S3 server (a run that reaches the lake now fails with a clear error)
#   cluster/s3.sh start      start it again on the same port, with the objects it held
#   cluster/s3.sh restart    both
#
# moto keeps its state in memory; cluster/up.sh starts it recording every request to
# data/cluster/s3-recording.jsonl, and `start` replays that recording, so a restarted server holds
# the same buckets and objects, as a real object store does after a restart.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$PWD/data/cluster
PY=${PYTHON:-$PWD/.venv/bin/python}
[ -f "$DIR/env.sh" ] && [ -f "$DIR/s3.port" ] || { echo "cluster: not up (make cluster-up)" >&2; exit 1; }
PORT=$(cat "$DIR/s3.port")

running() { [ -f "$DIR/pids/s3.pid" ] && kill -0 "$(cat "$DIR/pids/s3.pid")" 2>/dev/null; }

stop_s3() {
  running || { echo "cluster: S3 server already stopped"; return 0; }
  local pid
  pid=$(cat "$DIR/pids/s3.pid")
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q moto_server || { echo "cluster: pid $pid is not moto_server" >&2; exit 1; }
  kill -TERM -- "-$pid" 2>/dev/null
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
  rm -f "$DIR/pids/s3.pid"
  echo "cluster: stopped S3 (pid $pid)"
}

start_s3() {
  running && { echo "cluster: S3 server already running" >&2; return 1; }
  MOTO_ENABLE_RECORDING=True MOTO_RECORDER_FILEPATH="$DIR/s3-recording.jsonl" \
    setsid "$PY" cluster/moto_server_recorded.py -H 127.0.0.1 -p "$PORT" >>"$DIR/logs/s3.log" 2>&1 &
  echo $! >"$DIR/pids/s3.pid"
  "$PY" cluster/ready.py s3-replay "http://127.0.0.1:$PORT"
  echo "cluster: S3 (moto) on http://127.0.0.1:$PORT again, its objects replayed"
}

case "${1:-}" in
  stop) stop_s3 ;;
  start) start_s3 ;;
  restart) stop_s3 && start_s3 ;;
  *) echo "usage: cluster/s3.sh stop|start|restart" >&2; exit 2 ;;
esac
