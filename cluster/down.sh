#!/usr/bin/env bash
# Stop exactly what cluster/up.sh started: the processes named by the pid files in data/cluster/pids/.
# Postgres's data (data/cluster/pg) is kept; `rm -rf data/cluster` after this starts afresh.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=$PWD/data/cluster
status=0

# stop NAME WORD: SIGTERM to the process group of the pid in pids/NAME.pid (each was started in its own
# session), SIGKILL after 30 s. WORD must appear in the process's command line: a pid reused by another
# program is never signalled.
stop() {
  local file=$DIR/pids/$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"; then
    kill -TERM -- "-$pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "cluster: $1 (pid $pid) ignored SIGTERM for 30 s; killing it" >&2
      kill -KILL -- "-$pid" 2>/dev/null
    fi
    echo "cluster: stopped $1 (pid $pid)"
  fi
  rm -f "$file"
}

stop ray-node "ray start"
stop ray-head "ray start"
stop s3 moto_server

if [ -f "$DIR/pids/postgres.pid" ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [ "$(id -u)" = 0 ]; then AS_PG=(unshare --map-user=postgres --map-group=postgres); else AS_PG=(); fi
  if [ -f "$DIR/pg/postmaster.pid" ]; then
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DIR/pg" -m fast -w -t 60 stop >/dev/null || status=1
    echo "cluster: stopped postgres (pid $(cat "$DIR/pids/postgres.pid"))"
  fi
  rm -f "$DIR/pids/postgres.pid"
fi

# Ray's processes share the unique temp dir: any still running was started by this cluster.
if [ -f "$DIR/ray.tmpdir" ]; then
  RAY_TMP=$(cat "$DIR/ray.tmpdir")
  left=$(pgrep -f -- "$RAY_TMP" || true)
  if [ -n "$left" ]; then
    echo "cluster: Ray processes outlived their node: $left; killing them" >&2
    kill -KILL $left 2>/dev/null
  fi
  rm -rf "$RAY_TMP" "$DIR/ray.tmpdir"
fi

rm -f "$DIR/env.sh" "$DIR/s3.port" "$DIR/s3-recording.jsonl"
exit $status
