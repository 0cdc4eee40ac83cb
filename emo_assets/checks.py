"""Asset checks: the numbers are sane, nothing that landed was lost, and a day that drifts is flagged."""

import dagster as dg
import numpy as np

from emo_assets.lib import schemas
from emo_assets.lib.analytics import drift
from emo_assets.lib.model.score_rows import SCORE_SUM_TOLERANCE, scores_off
from emo_assets.lib.results import plots
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


class DriftConfig(dg.Config):
    """Thresholds and windows of the drift check (launchpad: the check's op config)."""

    psi_warn: float = drift.DEFAULT_PSI_WARN
    cosine_warn: float = drift.DEFAULT_COSINE_WARN
    baseline_days: int = drift.BASELINE_DAYS
    history_days: int = drift.HISTORY_DAYS


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _drift_table(history: list[drift.DayDrift], cfg: DriftConfig) -> str:
    lines = [
        "| day | model | recordings | baseline days | PSI | cosine shift | flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in reversed(history):
        flagged = "**yes**" if d.flagged(cfg.psi_warn, cfg.cosine_warn) else ""
        lines.append(
            f"| {d.day} | {d.model_id} | {d.recordings} | {len(d.baseline_days)} | {_number(d.psi)} "
            f"| {_number(d.cosine_shift)} | {flagged} |"
        )
    return "\n".join(lines)


@dg.asset_check(asset=SCORES, partitions_def=daily_partitions, blocking=False)
def emotion_drift(
    context: dg.AssetCheckExecutionContext, config: DriftConfig, storage: StorageResource
) -> dg.AssetCheckResult:
    """The day's emotion mix and mean embedding against the trailing 7 days: population stability
    index (PSI) of the top-emotion shares and cosine shift (1 - cosine) of the mean normalised
    embedding, per model. Warns (never blocks) when PSI is above 0.2 or the cosine shift above 0.05
    (op config psi_warn, cosine_warn, baseline_days); its metadata charts the last 30 days."""
    day = context.partition_key
    try:
        history = drift.day_drift(storage.lake_dir, day, config.baseline_days, config.history_days)
    except lake.CorruptPartitionError as exc:
        raise dg.Failure(f"{exc} (read by the emotion_drift check; re-run that day to repair it)") from None
    today = [d for d in history if d.day == day]
    if not today:
        _day_table(storage, "emotion_scores", day)  # no partition at all: the check cannot run
        return dg.AssetCheckResult(  # a day with no recordings (emptied with --allow-empty): no mix to compare
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="no drift: the day has no scored recordings, nothing to compare",
            metadata={"recordings": 0},
        )
    flagged = [d for d in today if d.flagged(config.psi_warn, config.cosine_warn)]
    worst_psi = max((d.psi for d in today if d.psi is not None), default=None)
    worst_shift = max((d.cosine_shift for d in today if d.cosine_shift is not None), default=None)
    summary = "; ".join(
        f"{d.model_id}: PSI {_number(d.psi)} (warn > {config.psi_warn}), cosine shift "
        f"{_number(d.cosine_shift)} (warn > {config.cosine_warn}) against {len(d.baseline_days)} day(s), "
        f"{d.baseline_recordings} recording(s)"
        for d in today
    )
    if flagged:
        context.log.warning(f"{day}: emotion drift: {summary}")
    days = sorted({d.day for d in history})
    model = max(today, key=lambda d: d.recordings).model_id
    series = {d.day: d for d in history if d.model_id == model}
    chart = plots.drift_png(
        days,
        [series[d].psi if d in series else None for d in days],
        [series[d].cosine_shift if d in series else None for d in days],
        config.psi_warn,
        config.cosine_warn,
        f"Drift of {model} against the trailing {config.baseline_days} days",
    )
    return dg.AssetCheckResult(
        passed=not flagged,
        severity=dg.AssetCheckSeverity.WARN,
        description=("drift: " if flagged else "no drift: ") + summary,
        metadata={
            "psi_warn": config.psi_warn,
            "cosine_warn": config.cosine_warn,
            "baseline_days": dg.MetadataValue.json(sorted({b for d in today for b in d.baseline_days})),
            "recordings": sum(d.recordings for d in today),
            "last_days_chart": dg.MetadataValue.md(plots.markdown_image(chart, "drift over the last days")),
            "last_days": dg.MetadataValue.md(_drift_table(history, config)),
            # the day's largest numbers over its models; absent without a baseline
            **({"psi": dg.MetadataValue.float(worst_psi)} if worst_psi is not None else {}),
            **({"cosine_shift": dg.MetadataValue.float(worst_shift)} if worst_shift is not None else {}),
        },
    )


# Checks that the day's data is correct (a failure is an error) ...
all_checks = [scores_sum_to_one, embeddings_match_model, every_file_accounted_for]
# ... and checks that watch how it moves over days (warnings, never blocking).
monitoring_checks = [emotion_drift]
