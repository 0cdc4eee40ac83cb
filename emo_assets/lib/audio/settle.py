"""The settle rule: when a file that landed under ``data/raw/<day>/`` may be read.

A file is **in flight** (still being written or copied) while it is younger than ``settle_s``
seconds (its modification time is that recent), or when its size or modification time changed
while a run was reading it. `emo run`, the schedule's runs and the sensor apply this one rule,
with one setting (``EMO_SETTLE_S``, default :data:`DEFAULT_SETTLE_S`):

* a run defers a file in flight: no row, no quarantine row, a ``deferred`` record naming it, and
  the next run of the day takes it (the sensor's fingerprint of the day changes once it settles);
* an interactive `emo run` first waits for such files, saying so, at most
  :data:`WAIT_FACTOR` x ``settle_s``, then defers those still in flight;
* files that landed earlier are processed at once.

A writer that pauses longer than ``settle_s`` between two writes cannot be told from a finished
file: set ``EMO_SETTLE_S`` above your recorders' longest pause (or have them write ``*.part``
and rename, which the scan ignores until the rename).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.audio.raw_scan import RawFile, scan_day

DEFAULT_SETTLE_S = 10.0
WAIT_FACTOR = 6  # an interactive run waits at most this many settle times, then defers
POLL_S = 0.5

REASON_YOUNG = "still being written: modified {age:.1f} s ago (settle time {settle_s:g} s); taken by the next run"
REASON_CHANGED = "still being written: its size or modification time changed while it was read; taken by the next run"


def is_young(mtime: float, settle_s: float, now: float) -> bool:
    """True while a file modified at ``mtime`` (seconds since the epoch) has not settled."""
    return now - mtime < settle_s


def has_changed(raw: RawFile) -> bool:
    """True when ``raw`` no longer has the size and modification time it was scanned with."""
    try:
        st = os.stat(raw.path)
    except OSError:
        return False  # gone or unreadable: the stage that reads it says so
    return st.st_size != raw.size_bytes or st.st_mtime_ns != raw.mtime_ns


def split_settled(
    files: list[RawFile], settle_s: float, now: float | None = None
) -> tuple[list[RawFile], list[tuple[RawFile, str]]]:
    """(files that settled, (file in flight, reason)) by age; both keep the scan's order."""
    now = time.time() if now is None else now
    settled, deferred = [], []
    for raw in files:
        mtime = raw.mtime_ns / 1e9
        if is_young(mtime, settle_s, now):
            deferred.append((raw, REASON_YOUNG.format(age=max(now - mtime, 0.0), settle_s=settle_s)))
        else:
            settled.append(raw)
    return settled, deferred


def deferred_rows(day: str, deferred: list[tuple[RawFile, str]]) -> pa.Table:
    """The ``deferred`` record of a day's run: one row per file left for the next run."""
    date = dt.date.fromisoformat(day)
    return pa.Table.from_pylist(
        [
            {
                "source_path": raw.source_path,
                "size_bytes": raw.size_bytes,
                "modified_at": dt.datetime.fromtimestamp(raw.mtime_ns / 1e9, dt.UTC),
                "reason": reason,
                "date": date,
            }
            for raw, reason in sorted(deferred, key=lambda d: d[0].source_path)
        ],
        schema=schemas.DEFERRED,
    )


def wait_for_day(
    raw_root: Path,
    day: str,
    settle_s: float,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Wait (at most ``WAIT_FACTOR * settle_s``) until no file of the day is in flight, saying so.

    Returns the source paths still in flight when the wait ended (the run defers them)."""
    start = clock()
    limit = WAIT_FACTOR * settle_s
    announced = False
    while True:
        files, _ = scan_day(raw_root, day)
        _, deferred = split_settled(files, settle_s, clock())
        young = [raw.source_path for raw, _ in deferred]
        if not young:
            if announced:
                say(f"  settled after {clock() - start:.1f} s")
            return []
        waited = clock() - start
        if waited >= limit:
            say(
                f"  still being written after {waited:.0f} s: {len(young)} file(s) deferred to the next run: "
                + ", ".join(young[:10])
                + (" ..." if len(young) > 10 else "")
            )
            return young
        if not announced:
            say(
                f"waiting up to {limit:.0f} s for {len(young)} file(s) still being written "
                f"(modified in the last {settle_s:g} s, EMO_SETTLE_S): "
                + ", ".join(young[:10])
                + (" ..." if len(young) > 10 else "")
            )
            announced = True
        sleep(min(POLL_S, max(limit - waited, 0.0)))
