"""Nothing lost: every file that landed for a day is either processed or quarantined."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from emo_assets.lib.raw_scan import scan_day


@dataclass(frozen=True)
class DayAccount:
    landed: tuple[str, ...]
    processed: tuple[str, ...]
    quarantined: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """Landed files that are neither processed nor quarantined."""
        return tuple(sorted(set(self.landed) - set(self.processed) - set(self.quarantined)))

    @property
    def both(self) -> tuple[str, ...]:
        """Files counted as processed and quarantined at once (never expected)."""
        return tuple(sorted(set(self.processed) & set(self.quarantined)))


def account_day(
    raw_root: Path, day: str, audio_files: pa.Table | None, scores: pa.Table | None, quarantine: pa.Table | None
) -> DayAccount:
    files, refused = scan_day(raw_root, day)
    landed = sorted([f.source_path for f in files] + [src for src, _ in refused])
    scored = set(scores.column("audio_id").to_pylist()) if scores is not None else set()
    processed = []
    if audio_files is not None:
        processed = sorted(
            src
            for src, audio_id in zip(
                audio_files.column("source_path").to_pylist(), audio_files.column("audio_id").to_pylist()
            )
            if audio_id in scored
        )
    quarantined = sorted(set(quarantine.column("source_path").to_pylist())) if quarantine is not None else []
    return DayAccount(tuple(landed), tuple(processed), tuple(quarantined))
