"""CPU tasks on the cluster's Ray nodes (lib/ray_cluster.py), the pool the resample stage runs in with
EMO_RAY_ADDRESS: a task's exception comes back as itself, and a task whose worker process is killed
runs again. The whole stage on Ray, FLAC for FLAC against in-process: tests/cluster/test_ray_inference.py.
"""

from __future__ import annotations

import pytest

from emo_assets.lib import ray_cluster
from emo_assets.lib.audio.decode import AudioDecodeError

pytestmark = pytest.mark.cluster


def test_a_tasks_exception_comes_back_as_itself_and_a_killed_worker_runs_its_task_again(cluster_env, tmp_path):
    marker = tmp_path / "killed-once"  # the cluster's nodes share this machine's filesystem

    def refuse(path: str):
        raise AudioDecodeError("truncated: the file ends inside a frame", path)

    def die_once(marker_path) -> int:
        import os
        import signal

        if not marker_path.exists():
            marker_path.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-task, as under the OOM killer
        return os.getpid()

    with ray_cluster.connected(cluster_env["EMO_RAY_ADDRESS"]):
        tasks = ray_cluster.CpuTasks(name="test")
        refused = tasks.submit(refuse, "raw/2026-11-20/call.wav").exception(timeout=120)
        survived = tasks.submit(die_once, marker).result(timeout=120)
    assert type(refused) is AudioDecodeError  # not Ray's wrapper: the resample stage quarantines it by reason
    assert (refused.reason, refused.path) == ("truncated: the file ends inside a frame", "raw/2026-11-20/call.wav")
    killed = int(marker.read_text())
    print(f"worker {killed} killed mid-task; the task ran again in worker {survived}")
    assert survived != killed
    assert tasks.submitted == 2 and len(tasks.nodes) >= 1
