"""Embeddings -> the approximate similarity index, one per model_id, kept current day by day."""

import dagster as dg

from emo_assets.assets.repair import claim_day
from emo_assets.lib.analytics import ann, nearest
from emo_assets.partitions import daily_partitions
from emo_assets.resources import StorageResource


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetKey("emotion_embeddings")],
    group_name="analytics",
    kinds={"faiss"},
)
def similarity_index(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The day's embeddings in each model's faiss index (IVF-SQ8): the day's file is replaced, no other day is read."""
    day = claim_day(context, storage)
    try:
        done = nearest.index_day(storage.lake_dir, storage.similarity_dir, day)
    except ann.AnnError as exc:
        raise dg.Failure(str(exc)) from exc
    for model_id in done.trained_now:
        context.log.info(f"trained the IVF of {model_id}: its index is approximate from now on")
    sizes = {m: len(ann.indexed_days(storage.similarity_dir, m)) for m in done.rows_by_model}
    return dg.MaterializeResult(
        metadata={
            "row_count": sum(done.rows_by_model.values()),
            "rows_by_model": dg.MetadataValue.json(done.rows_by_model),
            "days_indexed_by_model": dg.MetadataValue.json(sizes),
            "removed_from": dg.MetadataValue.json(done.removed_from),
            "path": dg.MetadataValue.path(str(storage.similarity_dir)),
        }
    )
