"""``emotion_segments`` -> ``call_emotion_arc``: how each voice of each recording moved from its
first turn to its last (lib/analytics/arc.py)."""

import dagster as dg

from emo_assets.assets.metadata import table_definition_metadata, table_description, table_metadata
from emo_assets.assets.repair import claim_day, day_input
from emo_assets.lib.analytics.arc import arc_rows
from emo_assets.lib.store import lake
from emo_assets.partitions import daily_partitions
from emo_assets.resources import StorageResource


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetKey("emotion_segments")],
    group_name="analytics",
    kinds={"parquet"},
    description=table_description("call_emotion_arc"),
    metadata=table_definition_metadata("call_emotion_arc"),
)
def call_emotion_arc(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    day = claim_day(context, storage)
    segments = day_input(storage, "emotion_segments", day, "emotion_segments")
    rows = arc_rows(segments)
    path = lake.write_partition(storage.lake_dir, "call_emotion_arc", day, rows)
    calmer = [v for v in rows.column("ended_calmer").to_pylist() if v is not None]
    recovered = [v for v in rows.column("recovered").to_pylist() if v is not None]
    return dg.MaterializeResult(
        metadata=table_metadata(
            rows,
            path,
            ended_calmer=dg.MetadataValue.int(sum(calmer)),
            ended_calmer_of=dg.MetadataValue.int(len(calmer)),
            recovered=dg.MetadataValue.int(sum(recovered)),
            recovered_of=dg.MetadataValue.int(len(recovered)),
        )
    )
