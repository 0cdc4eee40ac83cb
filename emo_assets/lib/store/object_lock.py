"""The day lock of a lake in an object store: one lock object per day, shared by every machine.

A local flock only sees the processes of one machine; with the lake in a bucket, two machines may
run the same day. So the lock is an object beside the lake, ``<lake>/_locks/<day>.lock``, created
with a conditional write (``If-None-Match: *``): of two writers that race, the store accepts exactly
one. It holds JSON naming its holder (holder, run_id, host, pid, started_at, renewed_at).

A lock is never left behind for good: its holder renews ``renewed_at`` every :data:`RENEW_S` seconds
(a conditional overwrite, ``If-Match`` its own last ETag, so it never overwrites a lock another
process took over). A lock is taken over, again with ``If-Match`` on the ETag that was judged
stale, so that of two processes taking it over one wins, when

* it names a Dagster run and the caller's Dagster instance says that run is finished (with
  Postgres every machine sees the same instance; while the instance says the run is active, the
  lock is kept, as on one machine: a run killed outside Dagster is marked failed in the UI first), or
* it was written on this machine by a process that no longer exists (SIGKILL, a crash), or
* it was not renewed for :data:`STALE_S` seconds (its machine died or lost the network; clocks of
  the machines are assumed within a few seconds of each other).

`emo run` holds the lock for its whole run and deletes it at the end (:func:`hold`); a Dagster run
claims it in its first step (:func:`claim`) and keeps renewing it while its process lives: the next
run of the day takes it over once the run is finished or its process is gone.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from emo_assets.lib.files import objectstore

RENEW_S = 5.0
STALE_S = 30.0
_POLL_S = 0.5

log = logging.getLogger(__name__)


class _Held:
    """A lock object this process holds: its content, its last ETag, and the thread renewing it."""

    def __init__(self, uri: str, info: dict, etag: str):
        self.uri, self.info, self.etag = uri, info, etag
        self.depth = 1
        self.lost = False
        self.stop = threading.Event()
        self.guard = threading.Lock()
        self.thread = threading.Thread(target=self._renew, name=f"day-lock {uri}", daemon=True)
        self.thread.start()

    def _renew(self) -> None:
        while not self.stop.wait(RENEW_S):
            with self.guard:
                try:
                    self.etag = _put(self.uri, {**self.info, "renewed_at": _now()}, if_match=self.etag)
                except (FileExistsError, FileNotFoundError):
                    self.lost = True
                    log.warning(f"day lock {self.uri} was taken over by another process; stopped renewing it")
                    return
                except Exception as exc:  # noqa: BLE001 - the store may be down for a while: try again later
                    log.warning(f"could not renew day lock {self.uri}: {exc}")

    def rewrite(self, info: dict) -> None:
        with self.guard:
            self.info = info
            self.etag = _put(self.uri, {**info, "renewed_at": _now()}, if_match=self.etag)

    def release(self) -> None:
        self.stop.set()
        self.thread.join(timeout=RENEW_S * 2)
        with self.guard:
            current = read_lock(self.uri)
            if current is not None and current[1] == self.etag:  # still ours
                objectstore.remove(self.uri)


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def lock_uri(locks_uri: str, day: str) -> str:
    return objectstore.join(locks_uri, f"{day}.lock")


def _put(uri: str, info: dict, *, create: bool = False, if_match: str | None = None) -> str:
    """Write the lock object conditionally; its new ETag. FileExistsError when the condition fails."""
    fs = objectstore.filesystem(uri)
    body = json.dumps(info).encode("utf-8")
    extra = {"IfMatch": if_match} if if_match is not None else {}
    with objectstore.store_errors("writing the day lock", uri):
        out = fs.pipe_file(objectstore.fs_path(uri), body, mode="create" if create else "overwrite", **extra)
    return out["ETag"]


def read_lock(uri: str) -> tuple[dict, str] | None:
    """The lock's content and ETag, read consistently (the ETag before and after agree); None if absent."""
    fs = objectstore.filesystem(uri)
    path = objectstore.fs_path(uri)
    with objectstore.store_errors("reading the day lock", uri):
        for _ in range(5):
            try:
                before = fs.info(path, refresh=True)["ETag"]
                body = fs.cat_file(path)
                after = fs.info(path, refresh=True)["ETag"]
            except FileNotFoundError:
                return None
            if before == after:
                try:
                    info = json.loads(body)
                except ValueError:
                    info = {}
                return (info if isinstance(info, dict) else {}), after
    return {}, after


def _info(holder: str, run_id: str | None, whole_run: bool) -> dict:
    now = _now()
    return {
        "holder": holder,
        "run_id": run_id,
        "whole_run_lock": whole_run,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": now,
        "renewed_at": now,
    }


def _pid_alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def stale_reason(info: dict, is_active: Callable[[str], bool] | None, now: dt.datetime | None = None) -> str | None:
    """Why a lock object's holder is gone (None: it may still be working)."""
    now = now or dt.datetime.now(dt.UTC)
    run_id = info.get("run_id")
    if run_id and is_active is not None:  # the Dagster instance knows best (a run's steps may be processes)
        return None if is_active(run_id) else f"its run {run_id} is finished"
    if info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid")):
        return f"its process (pid {info.get('pid')} on this machine) is gone"
    try:
        renewed = dt.datetime.fromisoformat(info["renewed_at"])
    except (KeyError, TypeError, ValueError):
        return "it names no holder"
    if (now - renewed).total_seconds() > STALE_S:
        return f"it was not renewed for {STALE_S:.0f} s"
    return None


def _describe(info: dict) -> str:
    who = info.get("holder") or "a run"
    return f"{who} (pid {info.get('pid')} on {info.get('host')}, since {info.get('started_at')})"


def _acquire(uri: str, info: dict, is_active, wait_s: float, refused: Callable[[dict], Exception]) -> str:
    """Create the lock object or take over a stale one; its ETag. ``refused(holder info)`` after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _put(uri, info, create=True)
        except FileExistsError:
            pass
        current = read_lock(uri)
        if current is not None:
            holder, etag = current
            reason = stale_reason(holder, is_active)
            if reason is not None:
                try:
                    etag = _put(uri, info, if_match=etag)
                except (FileExistsError, FileNotFoundError):
                    continue  # someone else was quicker; look again
                log.warning(f"took over the day lock {uri} from {_describe(holder)}: {reason}")
                return etag
            if time.monotonic() >= deadline:
                raise refused(holder)
        time.sleep(_POLL_S)


@contextmanager
def hold(
    locks_uri: str, day: str, holder: str, wait_s: float, refused: Callable[[dict, str], Exception]
) -> Iterator[None]:
    """Hold the day's lock object for the block (re-entrant in a process); deleted at the end."""
    uri = lock_uri(locks_uri, day)
    with _held_guard:
        held = _held.get(uri)
        if held is not None and not held.lost:
            held.depth += 1
    if held is not None and not held.lost:
        try:
            yield
        finally:
            with _held_guard:
                held.depth -= 1
        return
    info = _info(holder, None, whole_run=True)
    etag = _acquire(uri, info, None, wait_s, lambda h: refused(h, uri))
    held = _Held(uri, info, etag)
    with _held_guard:
        _held[uri] = held
    try:
        yield
    finally:
        with _held_guard:
            del _held[uri]
        held.release()


def holds(locks_uri: str, day: str) -> bool:
    with _held_guard:
        held = _held.get(lock_uri(locks_uri, day))
        return held is not None and held.info.get("whole_run_lock") and not held.lost


def claim(
    locks_uri: str,
    day: str,
    run_id: str,
    holder: str,
    is_active: Callable[[str], bool],
    wait_s: float,
    refused: Callable[[dict, str], Exception],
) -> None:
    """Make ``run_id`` the owner of the day (a Dagster run's first step). Kept, and renewed, while this
    process lives; taken over by the next run once ``run_id`` is finished or its process is gone."""
    uri = lock_uri(locks_uri, day)
    with _held_guard:
        held = _held.get(uri)
    if held is not None and not held.lost:
        if held.info.get("whole_run_lock"):
            return  # `emo run` holds the day for its whole run, this run included
        # An earlier run in this process claimed the day: it has finished, since its steps run here one by one.
        held.rewrite(_info(holder, run_id, whole_run=False))
        return
    info = _info(holder, run_id, whole_run=False)
    etag = _acquire(uri, info, is_active, wait_s, lambda h: refused(h, uri))
    with _held_guard:
        old = _held.pop(uri, None)
        _held[uri] = _Held(uri, info, etag)
    if old is not None:
        old.stop.set()


def days_in_flight(locks_uri: str, is_active: Callable[[str], bool]) -> set[str]:
    """Days another run is processing now: a lock object whose holder is not gone (:func:`stale_reason`),
    other than this process's own whole-run lock (`emo run` publishing at its end)."""
    days = set()
    for uri in objectstore.glob(objectstore.join(locks_uri, "*.lock")):
        day = uri.rsplit("/", 1)[-1].removesuffix(".lock")
        if holds(locks_uri, day):
            continue
        current = read_lock(uri)
        if current is not None and stale_reason(current[0], is_active) is None:
            days.add(day)
    return days
