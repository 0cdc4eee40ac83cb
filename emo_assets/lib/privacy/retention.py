"""Retention: days of raw audio, 16 kHz FLAC copies and tables kept, older ones deleted.

Three settings of the storage resource, in days (unset: kept for ever):

* ``keep_raw_days`` (EMO_KEEP_RAW_DAYS): ``<data>/raw/<DAY>/``, the recordings as they landed;
* ``keep_flac_days`` (EMO_KEEP_FLAC_DAYS): ``<data>/resampled/date=<DAY>/``, the 16 kHz FLACs;
* ``keep_tables_days`` (EMO_KEEP_TABLES_DAYS): every row of the day: the lake's day partitions
  (every table, quarantine and side tables), the warehouse's rows of the day (the DuckDB file then
  rewritten so no free block keeps them), the similarity index's day, ``exports/<DAY>/`` and
  ``reports/<DAY>/``. Fitted models are marked stale (they were fitted on those rows): the next run
  refits them on what is left.

A day is older than ``keep`` days when ``today - DAY > keep``: with 30, a day is deleted on its 31st
day. :func:`plan` lists what :func:`apply` would delete (``emo retention --dry-run``); ``retention_job``
runs :func:`apply` every day (``retention_schedule``). After deleting table days, the analysts' copy
is published again and every file under ``published/`` holding an expired day is deleted at once
(or cleaned in place when still listed), not kept for the grace period (lib/privacy/erase.py:
:func:`~emo_assets.lib.privacy.erase.republish`). No dagster here.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emo_assets.lib.analytics import ann, fitted
from emo_assets.lib.files.atomic import atomic_path
from emo_assets.lib.privacy.erase import Erasure, republish
from emo_assets.lib.store import day_lock, warehouse
from emo_assets.lib.store.paths import FITTED_MODEL_SUFFIX


@dataclass(frozen=True)
class Policy:
    raw_days: int | None = None
    flac_days: int | None = None
    tables_days: int | None = None


def policy_of(storage) -> Policy:
    """The retention settings of a StorageResource."""
    return Policy(storage.keep_raw_days, storage.keep_flac_days, storage.keep_tables_days)


@dataclass(frozen=True)
class Expired:
    """One thing past its retention: what (raw, flac, tables), its day, and the paths it covers."""

    kind: str
    day: str
    paths: tuple[Path, ...]


def _day(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name.removeprefix("date="))
    except ValueError:
        return None


def _days_in(folder: Path) -> dict[str, Path]:
    """``DAY`` -> folder, for the day folders (``DAY`` or ``date=DAY``) directly under ``folder``."""
    found = {}
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        day = _day(child.name)
        if child.is_dir() and day is not None:
            found[day.isoformat()] = child
    return found


def _old(day: str, keep: int | None, today: dt.date) -> bool:
    return keep is not None and (today - dt.date.fromisoformat(day)).days > keep


def plan(storage, policy: Policy, today: dt.date) -> list[Expired]:
    """Everything past its retention on ``today``, oldest day first."""
    from emo_assets.lib.privacy.erase import check_local_lake

    check_local_lake(storage, "retention")
    expired = []
    for day, folder in _days_in(storage.raw_dir).items():
        if _old(day, policy.raw_days, today):
            expired.append(Expired("raw", day, (folder,)))
    for day, folder in _days_in(storage.resampled_dir).items():
        if _old(day, policy.flac_days, today):
            expired.append(Expired("flac", day, (folder,)))
    table_days: dict[str, list[Path]] = {}
    for table_dir in _table_dirs(storage.lake_dir):
        for day, folder in _days_in(table_dir).items():
            table_days.setdefault(day, []).append(folder)
    for model_id in ann.indexed_models(storage.similarity_dir):
        for day in ann.indexed_days(storage.similarity_dir, model_id):
            table_days.setdefault(day, []).append(ann.day_path(storage.similarity_dir, model_id, day))
    for root in (storage.root / "exports", storage.reports_dir):
        for day, folder in _days_in(root).items():
            table_days.setdefault(day, []).append(folder)
    for day in sorted(table_days):
        if _old(day, policy.tables_days, today):
            expired.append(Expired("tables", day, tuple(table_days[day])))
    return sorted(expired, key=lambda e: (e.day, e.kind))


def _table_dirs(lake_dir: Path) -> list[Path]:
    """Every folder of the lake holding ``date=DAY`` partitions (tables, ``_rejects/<stage>``, ...)."""
    return sorted({p.parent for p in Path(lake_dir).rglob("date=*") if p.is_dir()})


def _day_rows(path: Path, days: list[str]) -> pa.Array | None:
    """Per row of a Parquet file, whether its ``date`` is one of ``days``; None without a date column."""
    if "date" not in pq.read_schema(path).names:
        return None
    dates = pc.cast(pq.read_table(path, columns=["date"]).column("date"), pa.string())
    return pc.fill_null(pc.is_in(dates, pa.array(days)), False)


def holds_days(path: Path, days: list[str]) -> bool:
    """True when a (published) Parquet file holds a row of one of ``days``: its folder is the day's,
    or its ``date`` column names one."""
    if path.parent.name.removeprefix("date=") in days:
        return True
    hit = _day_rows(path, days)
    return hit is not None and bool(pc.any(hit).as_py())


def _rewrite_without_days(path: Path, days: list[str]) -> None:
    hit = _day_rows(path, days)
    rows = pq.read_table(path)
    kept = rows.slice(0, 0) if hit is None else rows.filter(pc.invert(hit))
    with atomic_path(path) as tmp:
        pq.write_table(kept, tmp, compression="zstd")


def apply(
    storage,
    expired: list[Expired],
    now: dt.datetime | None = None,
    is_active: Callable[[str], bool] = lambda run: False,
) -> dict[str, int]:
    """Delete ``expired`` (from :func:`plan`); returns counts per kind. Each day is locked while its
    files go, so no run of that day works meanwhile. ``is_active``: as for
    :func:`~emo_assets.lib.privacy.erase.erase`."""

    counts: dict[str, int] = {}
    table_days = sorted({e.day for e in expired if e.kind == "tables"})
    for item in expired:
        with day_lock.hold_day(storage.locks_dir, item.day, holder="retention", wait_s=60):
            for path in item.paths:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        counts[item.kind] = counts.get(item.kind, 0) + 1
    if table_days:
        deleted = warehouse.erase_days(storage.warehouse_path, table_days)
        counts["warehouse_rows"] = sum(deleted.values())
        for path in sorted(Path(storage.models_dir).glob(f"*{FITTED_MODEL_SUFFIX}")):
            fitted.mark_stale(path, f"fitted on days since deleted by retention ({table_days[0]}...)", now)
        done = Erasure()
        republish(
            storage,
            lambda path: holds_days(path, table_days),
            lambda path: _rewrite_without_days(path, table_days),
            done,
            is_active,
        )
        counts.update(done.removed)
    return counts
