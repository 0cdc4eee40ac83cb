"""One run per day at a time: an exclusive lock file and a lease per day under ``data/locks/``.

Two mechanisms, because a day's run is either one process (`emo run`) or several (Dagster's
multiprocess executor runs each step in its own process):

* ``<day>.lock`` is held with ``fcntl.flock`` (exclusive) by :func:`hold_day`. `emo run` holds it
  for its whole run; the kernel releases it when the process ends, even on SIGKILL, so a crash
  never leaves a day locked. Re-entrant within a process: the run's own steps take it again freely.
* ``<day>.lease`` names the run that owns the day (JSON: run_id, holder, pid, started_at). The
  first step of a run (``audio_files``) claims it with :func:`claim_day` while holding the lock, and
  refuses when the lease belongs to another run that is still active (the caller says which runs
  are active, e.g. from the Dagster instance). A finished run's lease is simply taken over; so is
  the lease of a run that held the lock for its whole run (`emo run`) once the lock is free again,
  since the kernel freed it when that process ended.

The lock files are never deleted: unlinking a file another process is waiting on would let two
processes lock two different inodes of the same name.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from emo_assets.lib.files.atomic import atomic_write
from emo_assets.lib.files.flock import exclusive_flock

_POLL_S = 0.2
_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth), this process only
_held_guard = threading.Lock()


class DayLockedError(RuntimeError):
    """Another run is processing the day; the message names it and says what to do."""


def lock_path(locks_dir: Path, day: str) -> Path:
    return Path(locks_dir) / f"{day}.lock"


def lease_path(locks_dir: Path, day: str) -> Path:
    return Path(locks_dir) / f"{day}.lease"


def _describe(info: dict) -> str:
    if not info:
        return "another process"
    who = info.get("holder") or "a run"
    return f"{who} (pid {info.get('pid')} on {info.get('host')}, since {info.get('started_at')})"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _info(holder: str, run_id: str | None = None) -> dict:
    return {
        "holder": holder,
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@contextmanager
def hold_day(locks_dir: Path, day: str, holder: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the day's exclusive lock; wait up to ``wait_s`` seconds, then raise DayLockedError."""
    path = lock_path(locks_dir, day)
    key = str(path)
    with _held_guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return

    def refused() -> DayLockedError:
        return DayLockedError(
            f"day {day} is being processed by {_describe(_read_json(path))}; a second run of the same day is "
            f"refused so that their rows never mix. Wait for it to finish, then run again (lock file {path})."
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_flock(path, wait_s, _POLL_S, refused) as fd:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_info(holder)).encode("utf-8"), 0)
        with _held_guard:
            _held[key] = (fd, 1)
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]


def holds_day(locks_dir: Path, day: str) -> bool:
    """True if this process holds the day's lock (e.g. `emo run` around its in-process run)."""
    with _held_guard:
        return str(lock_path(locks_dir, day)) in _held


def read_lease(locks_dir: Path, day: str) -> dict:
    return _read_json(lease_path(locks_dir, day))


def check_lease(locks_dir: Path, day: str, run_id: str | None, is_active: Callable[[str], bool]) -> None:
    """Raise DayLockedError if the day's lease belongs to another run that ``is_active``.

    Call it while holding the day's lock (:func:`hold_day`).
    """
    lease = read_lease(locks_dir, day)
    owner = lease.get("run_id")
    if lease.get("whole_run_lock"):
        # Its owner held the lock for its whole run: were it alive, the caller could not hold it now.
        return
    if owner and owner != run_id and is_active(owner):
        raise DayLockedError(
            f"day {day} is being processed by run {owner}, {_describe(lease)}; a second run of the "
            "same day is refused so that their rows never mix. Wait for that run to finish, then "
            f"run again (lease {lease_path(locks_dir, day)})."
        )


def claim_day(
    locks_dir: Path, day: str, run_id: str, holder: str, is_active: Callable[[str], bool], wait_s: float = 5.0
) -> None:
    """Make ``run_id`` the owner of the day, unless another active run owns it (DayLockedError).

    Waits up to ``wait_s`` for the lock (another run's claim takes milliseconds; an `emo run` holds
    it for its whole run, and is then refused after the wait).
    """
    whole_run = holds_day(locks_dir, day)
    with hold_day(locks_dir, day, holder=holder, wait_s=wait_s):
        if not whole_run:
            check_lease(locks_dir, day, run_id, is_active)
        lease = {**_info(holder, run_id), "whole_run_lock": whole_run}
        with atomic_write(lease_path(locks_dir, day)) as f:
            f.write(json.dumps(lease).encode("utf-8"))


def days_in_flight(locks_dir: Path, is_active: Callable[[str], bool]) -> set[str]:
    """Days another run is processing now: the day's lock held by another process (`emo run` holds
    it for its whole run), or its lease owned by a run that ``is_active`` (a Dagster run). What is
    published leaves such a day as it was, so that half a run is never visible."""
    days = set()
    for path in sorted(Path(locks_dir).glob("*.lock")) if Path(locks_dir).is_dir() else []:
        day = path.name.removesuffix(".lock")
        if not (len(day) == 10 and day[4] == "-" and day[7] == "-") or holds_day(locks_dir, day):
            continue  # not a day's lock (the Dagster instance's), or this process's own run
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            days.add(day)
            continue
        finally:
            os.close(fd)
        owner = read_lease(locks_dir, day).get("run_id")
        if owner and is_active(owner):
            days.add(day)
    return days
