"""Asset checks: the numbers are sane and nothing that landed was lost."""

import dagster as dg
import numpy as np

from emo_assets.lib import schemas
from emo_assets.lib.store import lake
from emo_assets.lib.store.accounting import account_day
from emo_assets.lib.store.deferred import read_deferred
from emo_assets.partitions import daily_partitions
from emo_assets.resources import EmotionModelResource, StorageResource

SCORES = dg.AssetKey("emotion_scores")
EMBEDDINGS = dg.AssetKey("emotion_embeddings")
SCORE_SUM_TOLERANCE = 1e-5


def _day_table(storage: StorageResource, table: str, day: str):
    rows = lake.read_partition(storage.lake_dir, table, day)
    if rows is None:
        raise dg.Failure(f"no {table} for {day}")
    return rows


@dg.asset_check(asset=SCORES, partitions_def=daily_partitions, blocking=True)
def scores_sum_to_one(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    """The 9 scores of every recording are a probability distribution (sum 1 within 1e-5), no NaN."""
    scores = _day_table(storage, "emotion_scores", context.partition_key)
    matrix = (
        np.column_stack([scores.column(c).to_numpy() for c in schemas.EMOTION_LABELS])
        if scores.num_rows
        else np.zeros((0, 9))
    )
    deviation = np.abs(matrix.astype(np.float64).sum(axis=1) - 1.0)
    bad = [a for a, ok in zip(scores.column("audio_id").to_pylist(), deviation <= SCORE_SUM_TOLERANCE) if not ok]
    return dg.AssetCheckResult(
        passed=not bad and bool(np.isfinite(matrix).all()),
        metadata={
            "max_deviation": float(deviation.max()) if len(deviation) else 0.0,
            "failing_audio_ids": dg.MetadataValue.json(bad[:20]),
            "non_finite": int((~np.isfinite(matrix)).sum()),
        },
    )


@dg.asset_check(asset=EMBEDDINGS, partitions_def=daily_partitions, blocking=True)
def embeddings_match_model(
    context: dg.AssetCheckExecutionContext, storage: StorageResource, emotion_model: EmotionModelResource
) -> dg.AssetCheckResult:
    """Embedding width equals the model's and no value is NaN or infinite."""
    rows = _day_table(storage, "emotion_embeddings", context.partition_key)
    model = emotion_model.load()
    width = rows.schema.field("embedding").type.list_size
    matrix = lake.embedding_matrix(rows)
    non_finite = int((~np.isfinite(matrix)).sum())
    return dg.AssetCheckResult(
        passed=width == model.embed_dim and non_finite == 0,
        metadata={"width": width, "model_embed_dim": model.embed_dim, "non_finite": non_finite},
    )


@dg.asset_check(asset=dg.AssetKey("quarantine"), partitions_def=daily_partitions, blocking=True)
def every_file_accounted_for(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    """Every file under the day's folder `data/raw/YYYY-MM-DD/` is processed (scored), quarantined
    or deferred (still being written: the next run takes it), exactly once:
    landed = processed + quarantined + deferred, by source_path."""
    day = context.partition_key
    account = account_day(
        storage.raw_dir,
        day,
        lake.read_partition(storage.lake_dir, "audio_files", day),
        lake.read_partition(storage.lake_dir, "emotion_scores", day),
        lake.read_partition(storage.lake_dir, "quarantine", day),
        read_deferred(storage.lake_dir, day),
    )
    if account.deferred:
        context.log.warning(
            f"{day}: {len(account.deferred)} file(s) still being written, deferred to the next run: "
            f"{list(account.deferred)[:20]}"
        )
    if account.missing:
        context.log.error(
            f"{day}: {len(account.missing)} file(s) neither processed nor quarantined: {list(account.missing)[:20]}"
        )
    if account.duplicates:
        context.log.error(
            f"{day}: {len(account.duplicates)} file(s) counted more than once: {list(account.duplicates)[:20]}"
        )
    return dg.AssetCheckResult(
        passed=not account.missing and not account.both and not account.duplicates,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "landed": len(account.landed),
            "processed": len(account.processed),
            "quarantined": len(account.quarantined),
            "deferred": dg.MetadataValue.json(list(account.deferred)),
            "missing": dg.MetadataValue.json(list(account.missing)),
            "processed_and_quarantined": dg.MetadataValue.json(list(account.both)),
            "counted_twice": dg.MetadataValue.json(list(account.duplicates)),
        },
    )


all_checks = [scores_sum_to_one, embeddings_match_model, every_file_accounted_for]
