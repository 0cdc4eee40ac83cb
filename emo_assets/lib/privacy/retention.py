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
:func:`~emo_assets.lib.privacy.erase.republish`).

With the lake in an object store (``EMO_LAKE_URI``) the FLAC days are the ``<lake>/_resampled/date=DAY/``
prefixes and the table days every ``date=DAY`` prefix of the lake (checksum objects included); their
objects are deleted, the ``<lake>/_published/`` copies of the days with them, and in a versioned
bucket every non-current version and delete marker under the expired days' prefixes
(lib/privacy/bucket.py). No dagster here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc

from emo_assets.lib.analytics import ann, fitted
from emo_assets.lib.files import objectstore
from emo_assets.lib.privacy import bucket
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
    paths: tuple[Path | str, ...]  # local folders and files, or object-store prefixes


def _day(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name.removeprefix("date="))
    except ValueError:
        return None


def _days_in(folder: Path | str) -> dict[str, Path | str]:
    """``DAY`` -> folder, for the day folders (``DAY`` or ``date=DAY``) directly under ``folder`` (a
    local folder, or a URI prefix)."""
    found = {}
    for name, child in bucket.days_of(folder).items():
        day = _day(name)
        if day is not None and (objectstore.is_remote(child) or Path(child).is_dir()):
            found[day.isoformat()] = child
    return found


def _old(day: str, keep: int | None, today: dt.date) -> bool:
    return keep is not None and (today - dt.date.fromisoformat(day)).days > keep


def plan(storage, policy: Policy, today: dt.date) -> list[Expired]:
    """Everything past its retention on ``today``, oldest day first."""
    expired = []
    for day, folder in _days_in(storage.raw_dir).items():
        if _old(day, policy.raw_days, today):
            expired.append(Expired("raw", day, (folder,)))
    for day, folder in _days_in(storage.resampled_dir).items():
        if _old(day, policy.flac_days, today):
            expired.append(Expired("flac", day, (folder,)))
    table_days: dict[str, list[Path | str]] = {}
    for day, folder in bucket.day_folders(storage.lake_dir):
        if _day(day) is not None:
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


def _day_rows(path: Path | str, days: list[str]) -> pa.Array | None:
    """Per row of a Parquet file, whether its ``date`` is one of ``days``; None without a date column."""
    if "date" not in bucket.read_schema(path).names:
        return None
    dates = pc.cast(bucket.read_parquet(path, columns=["date"]).column("date"), pa.string())
    return pc.fill_null(pc.is_in(dates, pa.array(days)), False)


def holds_days(path: Path | str, days: list[str]) -> bool:
    """True when a (published) Parquet file holds a row of one of ``days``: its folder is the day's,
    or its ``date`` column names one."""
    if PurePosixPath(str(path)).parent.name.removeprefix("date=") in days:
        return True
    hit = _day_rows(path, days)
    return hit is not None and bool(pc.any(hit).as_py())


def _rewrite_without_days(path: Path | str, days: list[str]) -> None:
    hit = _day_rows(path, days)
    rows = bucket.read_parquet(path)
    kept = rows.slice(0, 0) if hit is None else rows.filter(pc.invert(hit))
    bucket.replace_parquet(path, kept)


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
                bucket.remove_tree(path)
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
    in_bucket = sorted({e.day for e in expired if any(objectstore.is_remote(p) for p in e.paths)})
    if in_bucket:
        prefixes = [f"/date={day}/" for day in in_bucket]
        versions = bucket.delete_old_versions(storage.lake_dir, lambda uri: any(p in uri for p in prefixes))
        if versions:
            counts["object_versions_deleted"] = versions
    return counts
