"""Nothing lost: every file that landed for a day is processed, quarantined, or deferred (still
being written when the day ran: the next run takes it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.audio.raw_scan import scan_day
from emo_assets.lib.store import lake


@dataclass(frozen=True)
class DayAccount:
    """Source paths of a day: landed, processed (scored) and quarantined, one entry per row found,
    so that a file counted twice shows up in :attr:`duplicates`."""

    landed: tuple[str, ...]
    processed: tuple[str, ...]
    quarantined: tuple[str, ...]
    deferred: tuple[str, ...] = ()

    @property
    def duplicates(self) -> tuple[str, ...]:
        """Files with more than one processed row, or quarantined more than once."""
        seen: set[str] = set()
        twice: set[str] = set()
        for src in (*self.processed, *self.quarantined):
            if src in seen:
                twice.add(src)
            seen.add(src)
        return tuple(sorted(twice - set(self.both)))

    @property
    def missing(self) -> tuple[str, ...]:
        """Landed files that are neither processed, quarantined nor deferred."""
        return tuple(sorted(set(self.landed) - set(self.processed) - set(self.quarantined) - set(self.deferred)))

    @property
    def gone(self) -> tuple[str, ...]:
        """Files processed or quarantined by the run that are no longer in the raw folder (removed
        after they landed): counted apart, so that a row naming a vanished file is never hidden."""
        return tuple(sorted((set(self.processed) | set(self.quarantined)) - set(self.landed)))

    @property
    def both(self) -> tuple[str, ...]:
        """Files counted as processed and quarantined at once (never expected)."""
        return tuple(sorted(set(self.processed) & set(self.quarantined)))


def account_day(
    raw_root: Path,
    day: str,
    audio_files: pa.Table | None,
    scores: pa.Table | None,
    quarantine: pa.Table | None,
    deferred: pa.Table | None = None,
) -> DayAccount:
    """``deferred``: the day's record of files left for the next run (lib/store/deferred.py); those
    still landed are accounted for as deferred."""
    files, refused = scan_day(raw_root, day)
    landed = sorted([f.source_path for f in files] + [src for src, _ in refused])
    # Score rows per recording and channel: identical copies share one row; two rows for one
    # recording's channel is a bug (a two-channel call has one row per channel).
    scored: Counter[str] = Counter()
    if scores is not None:
        ids = scores.column("audio_id").to_pylist()
        channels = scores.column("channel").to_pylist() if "channel" in scores.column_names else [None] * len(ids)
        for (audio_id, _), n in Counter(zip(ids, channels)).items():
            scored[audio_id] = max(scored[audio_id], n)
    processed = []
    if audio_files is not None:
        processed = sorted(
            src
            for src, audio_id in zip(
                audio_files.column("source_path").to_pylist(), audio_files.column("audio_id").to_pylist()
            )
            for _ in range(scored[audio_id])
        )
    quarantined = sorted(quarantine.column("source_path").to_pylist()) if quarantine is not None else []
    held = set(deferred.column("source_path").to_pylist()) if deferred is not None else set()
    waiting = sorted(held & set(landed))
    return DayAccount(tuple(landed), tuple(processed), tuple(quarantined), tuple(waiting))


class EmptyDayRefused(RuntimeError):
    """A day's raw folder is missing or empty while the lake holds results for it."""


def day_results(lake_root: Path, day: str) -> dict[str, int]:
    """Rows of ``day`` in each lake table that holds any (what re-running an empty day would delete)."""
    counts = {}
    for table in schemas.TABLES.values():
        if table.home != "lake":
            continue
        rows = lake.read_partition(lake_root, table.name, day)
        if rows is not None and rows.num_rows:
            counts[table.name] = rows.num_rows
    return counts


def refuse_empty_day(raw_root: Path, lake_root: Path, day: str, *, allow_empty: bool, how: str) -> None:
    """Raise EmptyDayRefused when ``raw_root/day`` is missing or empty but the day has results, unless
    ``allow_empty``; ``how`` is how the user says so (``--allow-empty``, a run config field)."""
    if allow_empty:
        return
    files, refused = scan_day(raw_root, day)
    if files or refused:
        return
    counts = day_results(lake_root, day)
    if not counts:
        return
    state = "is missing" if not (raw_root / day).is_dir() else "is empty"
    rows = ", ".join(f"{n} rows of {name}" for name, n in counts.items())
    raise EmptyDayRefused(
        f"the raw folder {raw_root / day} {state}, but {day} has results; re-running it would delete {rows} "
        f"(and the day's warehouse rows). Restore the recordings, or say {how} to empty the day on purpose"
    )
