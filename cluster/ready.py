"""Helpers for cluster/up.sh: free ports, and waiting until each component answers.

    python cluster/ready.py ports N                       N free TCP ports on 127.0.0.1, one line
    python cluster/ready.py s3 ENDPOINT BUCKET            wait for the S3 server, create BUCKET
    python cluster/ready.py s3-replay ENDPOINT            wait for a restarted S3 server, replay its recording
    python cluster/ready.py ray GCS_ADDRESS NODES         wait until NODES Ray nodes are alive
    python cluster/ready.py dagster                       create the instance's tables ($DAGSTER_HOME)

Each waits at most 120 s, then exits 1 with what did not answer.
"""

from __future__ import annotations

import socket
import sys
import time

TIMEOUT_S = 120.0


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait(what: str, attempt) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            attempt()
            return
        except Exception as exc:  # any failure means "not yet", until the deadline
            if time.monotonic() > deadline:
                sys.exit(f"cluster: {what} did not answer within {TIMEOUT_S:.0f} s: {exc!r}")
            time.sleep(0.5)


def s3_bucket(endpoint: str, bucket: str) -> None:
    import s3fs

    def attempt():
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.ls(bucket)

    wait(f"the S3 server at {endpoint}", attempt)


def s3_replay(endpoint: str) -> None:
    """A restarted moto server gets back the objects it held: it replays the requests it recorded."""
    import urllib.request

    def attempt():
        urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5).close()

    wait(f"the S3 server at {endpoint}", attempt)
    replay = urllib.request.Request(f"{endpoint}/moto-api/recorder/replay-recording", method="POST")
    urllib.request.urlopen(replay, timeout=TIMEOUT_S).close()


def ray_nodes(address: str, nodes: int) -> None:
    import ray

    host, port = address.rsplit(":", 1)

    def attempt():
        socket.create_connection((host, int(port)), timeout=2).close()  # GCS listening: ray.init won't spin
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        try:
            alive = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
        finally:
            ray.shutdown()
        if len(alive) < nodes:
            raise RuntimeError(f"{len(alive)} of {nodes} nodes alive: {alive}")

    wait(f"the Ray cluster at {address} ({nodes} nodes)", attempt)


def dagster_instance() -> None:
    import dagster as dg

    def attempt():
        with dg.DagsterInstance.get() as instance:
            instance.get_runs(limit=1)  # creates run, event log and schedule tables on first use

    wait("Dagster's Postgres storage", attempt)


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "ports":
        print(" ".join(str(p) for p in free_ports(int(args[0]))))
    elif command == "s3":
        s3_bucket(args[0], args[1])
    elif command == "s3-replay":
        s3_replay(args[0])
    elif command == "ray":
        ray_nodes(args[0], int(args[1]))
    elif command == "dagster":
        dagster_instance()
    else:
        sys.exit(f"cluster/ready.py: unknown command {command!r} (ports, s3, s3-replay, ray, dagster)")


if __name__ == "__main__":
    main(sys.argv[1:])
