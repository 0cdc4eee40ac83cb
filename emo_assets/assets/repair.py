"""A stage's previous partition of the day, verified before it is reused; what the stage recomputed
because its lake data failed an integrity check, said in the run log and in the asset's metadata."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from emo_assets.lib.store import lake
from emo_assets.resources import StorageResource

NAMED = 20  # audio_ids a log line names


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
