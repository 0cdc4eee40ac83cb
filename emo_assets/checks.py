"""Asset checks: the numbers are sane and nothing that landed was lost."""

import dagster as dg
import numpy as np

from emo_assets.lib import schemas
from emo_assets.lib.model.scoring import SCORE_SUM_TOLERANCE, scores_off
from emo_assets.lib.store import lake
from emo_assets.lib.store.accounting import account_day
from emo_assets.lib.store.deferred import read_deferred
from emo_assets.partitions import daily_partitions
from emo_assets.resources import EmotionModelResource, StorageResource

SCORES = dg.AssetKey("emotion_scores")
EMBEDDINGS = dg.AssetKey("emotion_embeddings")
NAMED_ROWS = 20  # failing rows a check names


def _day_table(storage: StorageResource, table: str, day: str):
    try:
        rows = lake.read_partition(storage.lake_dir, table, day)
    except lake.CorruptPartitionError as exc:
        raise dg.Failure(str(exc)) from None
    if rows is None:
        raise dg.Failure(f"no {table} for {day}")
    return rows


@dg.asset_check(asset=SCORES, partitions_def=daily_partitions, blocking=True)
def scores_sum_to_one(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    """The 9 scores of every recording are a probability distribution (sum 1 within 1e-5), no NaN;
    a failure names the recordings (their audio_id)."""
    result = scores_check_result(_day_table(storage, "emotion_scores", context.partition_key))
    if not result.passed:
        context.log.error(f"{context.partition_key}: {result.description}")
    return result


def scores_check_result(scores) -> dg.AssetCheckResult:
    """:func:`scores_sum_to_one` on one day's ``emotion_scores`` rows; a failure names the rows."""
    matrix = (
        np.column_stack([scores.column(c).to_numpy() for c in schemas.EMOTION_LABELS])
        if scores.num_rows
        else np.zeros((0, 9))
    ).astype(np.float64)
    deviation = np.abs(matrix.sum(axis=1) - 1.0)
    bad = scores_off(scores)
    description = None
    if bad:
        named = ", ".join(bad[:NAMED_ROWS]) + (f" and {len(bad) - NAMED_ROWS} more" if len(bad) > NAMED_ROWS else "")
        description = (
            f"{len(bad)} recording(s) whose 9 scores are not finite or do not sum to 1 within "
            f"{SCORE_SUM_TOLERANCE:g}: audio_id {named}; re-run the day: they are scored again"
        )
    return dg.AssetCheckResult(
        passed=not bad,
        description=description,
        metadata={
            "max_deviation": float(deviation[np.isfinite(deviation)].max()) if np.isfinite(deviation).any() else 0.0,
            "failing_audio_ids": dg.MetadataValue.json(bad[:NAMED_ROWS]),
            "failing_rows": len(bad),
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
