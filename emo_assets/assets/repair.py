"""What every step of a day shares: its claim on the day; the stage's previous partition of the day,
verified before it is reused; what the stage recomputed because its lake data failed an integrity
check, said in the run log and in the asset's metadata."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from emo_assets.lib.store import day_lock, lake
from emo_assets.resources import StorageResource, run_is_active

NAMED = 20  # audio_ids a log line names


def claim_day(context: dg.AssetExecutionContext, storage: StorageResource) -> str:
    """The step's day, claimed for its run before the step reads or writes it: no other run may be
    working on the same day (lib/store/day_lock.py). Every step of a day claims it, not only the
    first, so a run that starts further down the graph (assets picked in the UI, a retry from the
    failed step) owns the day it writes; a run that already owns it only renews its claim."""
    day = context.partition_key
    try:
        day_lock.claim_day(
            storage.locks_dir,
            day,
            context.run_id,
            holder=f"dagster run {context.run_id}",
            is_active=lambda run_id: run_is_active(context.instance, run_id),
        )
    except day_lock.DayLockedError as exc:
        raise dg.Failure(str(exc)) from None
    return day


def reusable(context: dg.AssetExecutionContext, storage: StorageResource, table: str, day: str) -> lake.Reused:
    """``table``'s previous partition of ``day``; one that fails its integrity check is set aside
    (the stage recomputes it from its source) with an error in the run log."""
    previous = lake.read_reusable(storage.lake_dir, table, day)
    if previous.corrupt:
        context.log.error(
            f"{day}: {table} failed its integrity check, recomputing it from its source: {previous.corrupt}"
        )
    return previous


def day_input(storage: StorageResource, table: str, day: str, asset: str) -> pa.Table:
    """An upstream stage's partition of ``day``, which the step needs whole."""
    try:
        rows = lake.read_partition(storage.lake_dir, table, day)
    except lake.CorruptPartitionError as exc:
        raise dg.Failure(f"{exc} (the {asset} step writes it)") from None
    if rows is None:
        raise dg.Failure(f"no {table} for {day}: materialize {asset} for this day first")
    return rows


def repairs(
    context: dg.AssetExecutionContext,
    table: str,
    day: str,
    previous: lake.Reused,
    rows: pa.Table,
    row_ids: tuple[str, ...] | list[str] = (),
) -> dict:
    """Metadata saying what this run of ``table`` recomputed because it failed an integrity check:
    ``repaired_audio_ids`` (every recording of the day when the partition was set aside, since a
    corrupt file cannot be read; else the rows in ``row_ids``) and ``repaired_partition`` (why the
    partition was set aside, empty when it was sound). Logged when anything was repaired."""
    ids = set(row_ids)
    if previous.corrupt:
        ids |= set(rows.column("audio_id").to_pylist())
    repaired = sorted(ids)
    if repaired:
        more = f" and {len(repaired) - NAMED} more" if len(repaired) > NAMED else ""
        context.log.warning(
            f"{day}: {table}: {len(repaired)} recording(s) recomputed from their source because the stored "
            f"data failed its integrity check: audio_id {', '.join(repaired[:NAMED])}{more}"
        )
    return {
        "repaired_audio_ids": dg.MetadataValue.json(repaired),
        "repaired_partition": dg.MetadataValue.text(previous.corrupt or ""),
    }
