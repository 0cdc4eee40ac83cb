"""The files a day's run left for the next run because they were still being written.

Written by ``audio_files`` on every run of the day (replaced as a whole, empty when nothing was
deferred), beside the lake tables as ``<lake>/_deferred/date=<day>/part-0.parquet``; read by the
accounting (a deferred file is accounted for, not missing) and the run's summary.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.store import lake

DEFERRED = "_deferred"


def write_deferred(lake_root: Path, day: str, rows: pa.Table) -> Path:
    return lake.write_partition(lake_root, DEFERRED, day, rows.cast(schemas.DEFERRED))


def read_deferred(lake_root: Path, day: str) -> pa.Table | None:
    """The day's deferred files as of its last run; None if no run of the day recorded any."""
    return lake.read_partition(lake_root, DEFERRED, day)


def deferred_paths(lake_root: Path, day: str) -> list[str]:
    rows = read_deferred(lake_root, day)
    return sorted(rows.column("source_path").to_pylist()) if rows is not None else []


def days_with_deferred(lake_root: Path) -> list[str]:
    """Days whose last run left files for the next run, and days whose record of that fails its
    integrity check (the day's next run writes it again)."""
    days = []
    for day in lake.partition_days(lake_root, DEFERRED):
        try:
            if deferred_paths(lake_root, day):
                days.append(day)
        except lake.CorruptPartitionError:
            days.append(day)
    return days
