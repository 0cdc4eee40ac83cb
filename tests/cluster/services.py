"""Test-only helpers of the cluster tests: Dagster's daemon and webserver as child processes, the
webserver's GraphQL API, `emo run` against the cluster, and a day's tables read back canonically.
Imported as ``tests.cluster.services``."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from emo_assets.lib import schemas
from emo_assets.lib.store import lake, warehouse
from emo_assets.resources import PROJECT_ROOT
from tests.helpers import DAY, EMO, emo_env

RUN_TIMEOUT_S = 600
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


def lake_env(cluster_env: dict, lake_uri: str | None) -> dict:
    """The environment of an `emo` process: the cluster's S3 endpoint, and EMO_LAKE_URI when given."""
    env = emo_env(**{k: cluster_env[k] for k in AWS_VARS})
    if lake_uri:
        env["EMO_LAKE_URI"] = lake_uri
    return env


def emo_run(data_dir: Path, model_dir: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [EMO, "run", "--date", DAY, "--data-dir", str(data_dir), "--model", str(model_dir), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def day_tables(data_dir: Path, lake_root: Path | str) -> dict[str, list[tuple]]:
    """Every lake table's day and every warehouse table and view, rows sorted, with the places that
    must differ masked: the data directory, the lake's root and the FLACs' folder (``resampled_audio.path``
    is relative to the data directory, ``resampled/...``, or to the lake's URI, ``_resampled/...``)."""
    remote = isinstance(lake_root, str)
    resampled = f"{lake_root}/_resampled" if remote else str(data_dir / "resampled")
    relative = "_resampled/" if remote else "resampled/"

    def cell(value):
        if isinstance(value, str):
            if value.startswith(relative):
                value = "<resampled>/" + value.removeprefix(relative)
            return (
                value.replace(resampled, "<resampled>")
                .replace(str(lake_root), "<lake>")
                .replace(str(data_dir), "<data>")
            )
        if isinstance(value, dt.datetime):
            return "<time>"  # ingested_at: when a file was first seen
        return value

    tables = {}
    for table in schemas.LAKE_TABLES:
        rows = lake.read_partition(lake_root, table, DAY)
        if rows is not None:
            tables[f"lake:{table}"] = sorted(tuple(cell(v) for v in r.values()) for r in rows.to_pylist())
    con = warehouse.open_read_copy(data_dir)  # registers the store's filesystem for an S3 lake's views
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        for name in names:
            rows = con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall()
            tables[name] = [tuple(cell(v) for v in row) for row in rows]
    finally:
        con.close()
    return tables


def published_days(data_dir: Path, table: str = "emotion_scores") -> set[str]:
    """The days of ``table`` in the analysts' read copy (none before the first publish)."""
    try:
        con = warehouse.open_read_copy(data_dir)
    except FileNotFoundError:
        return set()
    try:
        return {str(d) for (d,) in con.execute(f'SELECT DISTINCT date FROM "{table}"').fetchall()}
    finally:
        con.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Services:
    """Long-running processes of the test, each in its own session, stopped with their children."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.procs = env, log_dir, {}

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs[name] = (
            subprocess.Popen(
                args, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            ),
            log,
        )

    def check_alive(self) -> None:
        for name, (proc, _) in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 4000) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        for proc, _log in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever is left in the session (a code server, a run worker) was started here
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            log.close()


def graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GraphQL {exc.code}: {exc.read().decode(errors='replace')[:3000]}") from exc
    assert "errors" not in body, body
    return body["data"]


def wait_for_webserver(port: int, services: Services, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        services.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                return
        except OSError:
            assert time.monotonic() < deadline, (
                f"webserver did not answer in {timeout_s} s:\n{services.tail('webserver')}"
            )
            time.sleep(1)
