"""A day on the cluster's Ray nodes (EMO_RAY_ADDRESS: resampling as CPU tasks, inference in model actors):
the same lake and FLACs, file for file, as in-process;
a model actor's process killed with SIGKILL mid-day; an address where no cluster answers.

Every run is a real `emo run` of one day with the tiny random model. The three runs of a day use the
same data directory path one after the other (each moved aside when done), so the paths stored in
the rows are the same and every lake file can be compared byte for byte.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from emo_assets.lib.store import lake
from tests.helpers import DAY, EMO, emo_env, write_small_day

pytestmark = pytest.mark.cluster

RECORDINGS = 64  # 8 batches of 8: two actors, several batches each, time to kill one mid-day
RUN_TIMEOUT_S = 600
# Tables holding a wall-clock time (when a file was first seen): equal rows, the time masked.
CLOCKED = {"audio_files": "ingested_at"}
BATCH_LINE = re.compile(r"batch (\d+) scored on Ray .*actor pid (\d+)")


class Day:
    """One day's raw files run by `emo run` in ``workdir/data``, the result moved to ``workdir/<name>``."""

    def __init__(self, workdir: Path, model_dir: Path) -> None:
        self.workdir, self.model_dir = workdir, model_dir
        self.data_dir = workdir / "data"

    def run(self, name: str, on_batch=None, **env) -> tuple[Path, str]:
        write_small_day(self.data_dir / "raw" / DAY, n=RECORDINGS)
        proc = subprocess.Popen(
            [EMO, "run", "--date", DAY, "--data-dir", str(self.data_dir), "--model", str(self.model_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=emo_env(**env),
            start_new_session=True,
        )
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        err = []
        for line in proc.stderr:
            err.append(line)
            if on_batch is not None and (match := BATCH_LINE.search(line)):
                on_batch(int(match.group(1)), int(match.group(2)))
        proc.wait(timeout=RUN_TIMEOUT_S)
        reader.join(timeout=60)
        log = "".join(err)
        assert proc.returncode == 0, log[-4000:]
        done = self.workdir / name
        self.data_dir.rename(done)
        return done, log


@pytest.fixture(scope="module")
def day(tmp_path_factory, tiny_model_dir) -> Day:
    return Day(tmp_path_factory.mktemp("ray-day"), tiny_model_dir)


@pytest.fixture(scope="module")
def in_process(day) -> Path:
    """The reference: the day scored in the run's own process (EMO_RAY_ADDRESS unset)."""
    done, _ = day.run("in-process")
    return done


def _lake_files(data_dir: Path) -> dict[str, bytes]:
    files = {}
    for root in ("lake", "resampled"):
        for path in sorted((data_dir / root).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(data_dir))] = path.read_bytes()
    return files


def _assert_same_lake(reference: Path, other: Path) -> int:
    """Every lake file and 16 kHz FLAC of ``other`` is ``reference``'s, byte for byte; a table with a
    wall-clock column, row for row with the time masked. Returns the number of files compared."""
    ours, theirs = _lake_files(reference), _lake_files(other)
    assert sorted(theirs) == sorted(ours)
    clocked = [name for name in ours if any(f"/{table}/" in f"/{name}" for table in CLOCKED)]
    for name in ours:
        if name not in clocked:
            assert theirs[name] == ours[name], f"{name} differs"
    for table, column in CLOCKED.items():
        rows = [
            pq.read_table(data_dir / "lake" / table / f"date={DAY}" / "part-0.parquet").drop_columns([column])
            for data_dir in (reference, other)
        ]
        assert rows[0].equals(rows[1]), table
    scored = lake.read_partition(other / "lake", "emotion_scores", DAY)
    assert scored.num_rows == RECORDINGS
    return len(ours)


def _metadata(data_dir: Path, asset: str = "emotion_scores") -> dict:
    instance = dg.DagsterInstance.from_config(str(data_dir / "dagster_home"))
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_a_day_on_ray_writes_the_in_process_lake_byte_for_byte_with_one_model_load_per_actor(
    cluster_env, day, in_process
):
    on_ray, log = day.run("ray", EMO_RAY_ADDRESS=cluster_env["EMO_RAY_ADDRESS"])
    compared = _assert_same_lake(in_process, on_ray)
    meta = _metadata(on_ray)
    print(f"{compared} lake files identical; metadata: { {k: v for k, v in meta.items() if k.startswith('ray')} }")
    assert meta["ray_actors"] == 2 and meta["ray_nodes"] == 2  # one actor per node's `emo_model` unit
    assert meta["ray_batches"] == RECORDINGS // 8
    assert meta["inferred"] == RECORDINGS
    loads = meta["ray_model_loads"]
    assert len(loads) == 2 and set(loads.values()) == {1}, loads  # one model load per actor process
    assert len(BATCH_LINE.findall(log)) == RECORDINGS // 8  # each batch reported in the run's log
    # The FLACs compared above were made by Ray CPU tasks, one per recording, on both nodes.
    resampled = _metadata(on_ray, "resampled_audio")
    assert (resampled["ray_tasks"], resampled["ray_nodes"]) == (RECORDINGS, 2), resampled
    assert f"{RECORDINGS} recording(s) resampled by Ray tasks on 2 node(s)" in log


def test_a_model_actor_killed_mid_day_is_restarted_and_the_day_is_the_in_process_day(cluster_env, day, in_process):
    killed: list[int] = []

    def kill_first_actor(batch: int, pid: int) -> None:
        if killed:
            return
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        assert b"ModelActor" in cmdline, cmdline  # a Ray worker of ours, never another process
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    on_ray, log = day.run("ray-killed", on_batch=kill_first_actor, EMO_RAY_ADDRESS=cluster_env["EMO_RAY_ADDRESS"])
    assert killed
    _assert_same_lake(in_process, on_ray)  # nothing lost, nothing twice
    meta = _metadata(on_ray)
    loads = meta["ray_model_loads"]
    print(f"killed actor process {killed[0]}; model loads per actor process: {loads}")
    actors = {key.split("/")[0] for key in loads}
    assert len(actors) == 2
    assert len(loads) == 3, loads  # the killed actor scored again from a restarted process
    assert any(key.endswith(f"/{killed[0]}") for key in loads)
    assert set(loads.values()) == {1}  # one model load per process, the restarted one included
    assert meta["ray_batches"] == RECORDINGS // 8 and meta["inferred"] == RECORDINGS


def _closed_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_is_a_clear_error_and_nothing_is_quarantined(cluster_env, day):
    address = f"127.0.0.2:{_closed_port('127.0.0.2')}"
    write_small_day(day.data_dir / "raw" / DAY, n=3)
    try:
        done = subprocess.run(
            [EMO, "run", "--date", DAY, "--data-dir", str(day.data_dir), "--model", str(day.model_dir)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=emo_env(EMO_RAY_ADDRESS=address),
        )
        assert done.returncode != 0
        print(next((line for line in done.stderr.splitlines() if "RayClusterError" in line), done.stderr[-2000:]))
        assert "RayClusterError" in done.stderr and f"Ray address {address!r} (EMO_RAY_ADDRESS" in done.stderr, (
            done.stderr[-3000:]
        )
        # The run stopped at its first Ray stage (resampling): no FLAC, no scores, no file blamed.
        assert lake.read_partition(day.data_dir / "lake", "resampled_audio", DAY) is None
        assert lake.read_partition(day.data_dir / "lake", "emotion_scores", DAY) is None
        quarantined = lake.read_partition(day.data_dir / "lake", "quarantine", DAY)
        assert quarantined is None or set(quarantined.column("stage").to_pylist()) <= {"audio_files"}
        assert not list((day.data_dir / "lake").rglob("*emotion_scores*.parquet"))
        assert not list(day.data_dir.rglob("*.flac"))
    finally:
        shutil.rmtree(day.data_dir, ignore_errors=True)
