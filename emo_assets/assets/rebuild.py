"""Before an asset writes to the warehouse: a missing or corrupt warehouse is rebuilt from the lake
for every day (lib/analytics/rebuild.py)."""

import dagster as dg

from emo_assets.lib.analytics import rebuild
from emo_assets.lib.store import warehouse
from emo_assets.resources import StorageResource


def ensure_warehouse(context: dg.AssetExecutionContext, storage: StorageResource) -> None:
    try:
        rebuilt = rebuild.ensure_warehouse(
            storage.warehouse_path,
            storage.lake_dir,
            storage.models_dir,
            storage.sql_models_dir,
            running_day=context.partition_key if context.has_partition_key else None,
        )
    except warehouse.WarehouseCorruptError as exc:
        raise dg.Failure(f"rebuilding the warehouse failed: {exc}") from None
    if rebuilt is not None:
        context.log.warning(
            f"{rebuilt.reason}: rebuilt from the lake for {len(rebuilt.days)} day(s), rows {rebuilt.rows}"
        )
