"""The Ray cluster of EMO_RAY_ADDRESS as a day's stages use it: reached, connected to, and given CPU tasks.

Both stages that fan out on Ray use this module: the resample stage (raw file -> 16 kHz FLAC, one CPU
task per recording, :class:`CpuTasks`) and scoring (decode tasks and model actors,
:mod:`emo_assets.lib.model.ray_scoring`). ``ray`` is imported inside the functions only (the
``[cluster]`` extra installs it).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager

CONNECT_TIMEOUT_S = 10.0
# A task whose worker process dies (killed, out of memory) is run again this many times.
TASK_RETRIES = 3


def named_address(address: str) -> str:
    """The address as a message names it: it comes from EMO_RAY_ADDRESS or from a run's config."""
    return f"Ray address {address!r} (EMO_RAY_ADDRESS, or resources.ray.config.address in a run's config)"


class RayClusterError(RuntimeError):
    """The Ray cluster of EMO_RAY_ADDRESS cannot run the day (unreachable, no room for a model actor).
    The cluster's fault, not a recording's: the step fails and nothing is quarantined."""


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """RayClusterError naming EMO_RAY_ADDRESS unless something listens at its host:port."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise RayClusterError(
            f"{named_address(address)}: no Ray cluster answers there ({type(exc).__name__}: {exc}); "
            "start the cluster (make cluster-up, then . data/cluster/env.sh), point the address at its "
            "head (host:port of the GCS, or ray://host:port for the Ray client), or leave it unset to run in this process"
        ) from exc


@contextmanager
def connected(address: str) -> Iterator[None]:
    """This process connected to the cluster at ``address`` for the block; a process that was
    connected already stays connected after it."""
    import ray

    if ray.is_initialized():
        yield
        return
    check_reachable(address)
    try:
        ray.init(address=address, namespace="emo_assets", log_to_driver=False, logging_level="WARNING")
    except Exception as exc:
        raise RayClusterError(f"{named_address(address)}: ray.init failed: {type(exc).__name__}: {exc}") from exc
    try:
        yield
    finally:
        ray.shutdown()


def _on_node(fn: Callable, *args):
    """A task's body: ``fn(*args)``, or the exception it raised, as a value (so the caller gets the
    exception itself, not Ray's wrapper of it), and the node that ran it."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        return fn(*args), None, node
    except Exception as exc:  # noqa: BLE001 - handed back whole; the caller decides what it means
        return None, exc, node


class CpuTasks(Executor):
    """A ``concurrent.futures.Executor`` on the connected cluster: each ``submit`` one Ray
    task asking for one CPU (named ``name`` in Ray's dashboard), run again if its worker dies. The
    future holds ``fn``'s result or the exception ``fn`` raised. ``nodes``: the nodes that ran them."""

    def __init__(self, name: str) -> None:
        import ray

        super().__init__()
        self._remote = ray.remote(_on_node).options(num_cpus=1, max_retries=TASK_RETRIES, name=name)
        self.submitted = 0
        self.nodes: set[str] = set()

    def submit(self, fn: Callable, /, *args) -> Future:
        result: Future = Future()

        def settle(ray_future: Future) -> None:
            try:
                value, error, node = ray_future.result()
            except Exception as exc:  # noqa: BLE001 - the cluster failed the task (retries spent): the caller's error
                result.set_exception(
                    RayClusterError(f"a Ray task of the cluster failed for good: {type(exc).__name__}: {exc}")
                )
                return
            self.nodes.add(node)
            if error is None:
                result.set_result(value)
            else:
                result.set_exception(error)

        self._remote.remote(fn, *args).future().add_done_callback(settle)
        self.submitted += 1
        return result
