"""Nothing lost: every file that landed for a day is processed, quarantined, or deferred (still
being written when the day ran: the next run takes it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from emo_assets.lib.audio.raw_scan import scan_day


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
    # Score rows per recording: identical copies share one row; two rows for one recording is a bug.
    scored = Counter(scores.column("audio_id").to_pylist()) if scores is not None else Counter()
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
