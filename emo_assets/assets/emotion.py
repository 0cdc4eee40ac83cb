"""16 kHz recordings -> one emotion2vec+ pass -> ``emotion_embeddings``, ``emotion_scores`` and
``emotion_segments`` (and, opt-in, ``emotion_frames``); every file any stage could not process
-> ``quarantine``."""

from collections import Counter

import dagster as dg
import pyarrow as pa

from emo_assets.assets.audio import raw_audio, resampled_audio
from emo_assets.assets.metadata import table_metadata
from emo_assets.lib import schemas
from emo_assets.lib.analytics import similarity
from emo_assets.lib.audio.load import FlacReader
from emo_assets.lib.model.scoring import EMOTION_STAGE, frame_batches, score_day
from emo_assets.lib.results import plots
from emo_assets.lib.store import lake, warehouse
from emo_assets.partitions import daily_partitions
from emo_assets.resources import EmotionModelResource, StorageResource


def emotion_distribution(scores: pa.Table) -> dict[str, int]:
    counts = Counter(scores.column("emotion").to_pylist())
    return {label: counts.get(label, 0) for label in schemas.EMOTION_LABELS}


@dg.multi_asset(
    specs=[
        dg.AssetSpec("emotion_embeddings", deps=[resampled_audio], kinds={"parquet"}, group_name="emotion"),
        dg.AssetSpec("emotion_scores", deps=[resampled_audio], kinds={"parquet"}, group_name="emotion"),
        dg.AssetSpec("emotion_segments", deps=[resampled_audio], kinds={"parquet"}, group_name="emotion"),
        dg.AssetSpec(
            "emotion_frames",
            deps=[resampled_audio],
            kinds={"parquet"},
            group_name="emotion",
            skippable=True,
            description="Per-frame (50 Hz) embeddings and scores; written only with frame_granularity on.",
        ),
    ],
    partitions_def=daily_partitions,
)
def emotion_inference(context: dg.AssetExecutionContext, storage: StorageResource, emotion_model: EmotionModelResource):
    """One emotion2vec+ pass over the day's recordings: embeddings and 9-class scores."""
    day = context.partition_key
    model = emotion_model.load()
    if model.is_random:
        context.log.warning(
            f"model {model.model_id} has RANDOM weights: its emotions are meaningless (set EMO_MODEL for real ones)"
        )
    resampled = lake.read_partition(storage.lake_dir, "resampled_audio", day)
    audio_files = lake.read_partition(storage.lake_dir, "audio_files", day)
    if resampled is None or audio_files is None:
        raise dg.Failure(f"no resampled_audio for {day}: materialize resampled_audio for this day first")

    def progress(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            context.log.info(f"{day}: inference {done}/{total}")

    out = score_day(
        resampled,
        audio_files,
        model,
        day,
        previous_scores=lake.read_partition(storage.lake_dir, "emotion_scores", day),
        previous_embeddings=lake.read_partition(storage.lake_dir, "emotion_embeddings", day),
        previous_segments=lake.read_partition(storage.lake_dir, "emotion_segments", day),
        open_audio=FlacReader,
        progress=progress,
    )
    emb_path = lake.write_partition(storage.lake_dir, "emotion_embeddings", day, out.embeddings)
    scores_path = lake.write_partition(storage.lake_dir, "emotion_scores", day, out.scores)
    segments_path = lake.write_partition(storage.lake_dir, "emotion_segments", day, out.segments)
    frame_rows = None
    if model.settings.frames:
        scored = out.scores.column("audio_id").to_pylist()
        frames = frame_batches(model, resampled, day, scored, open_audio=FlacReader)
        frames_schema = schemas.emotion_frames_schema(model.embed_dim)
        frames_path, frame_rows = lake.write_partition_batches(
            storage.lake_dir, "emotion_frames", day, frames, frames_schema
        )
    lake.write_rejects(storage.lake_dir, EMOTION_STAGE, day, out.rejects)
    with warehouse.connect(storage.warehouse_path) as con:
        warehouse.replace_index_day(con, day, out.embeddings)
        warehouse.refresh_lake_views(con, storage.lake_dir, embed_dim=model.embed_dim)
        similarity.create_similarity_macros(con)

    common = {
        "model_id": dg.MetadataValue.text(model.model_id),
        "random_weights": dg.MetadataValue.bool(model.is_random),
        "inferred": out.inferred,
        "reused_from_previous_run": out.reused,
        "quarantined": out.rejects.num_rows,
    }
    yield dg.MaterializeResult(
        asset_key="emotion_embeddings",
        metadata={**table_metadata(out.embeddings, emb_path), "embed_dim": model.embed_dim, **common},
    )
    distribution = emotion_distribution(out.scores)
    chart = plots.distribution_png(distribution, f"Emotions on {day} ({out.scores.num_rows} recordings)")
    chart_path = plots.write_png(storage.reports_dir / day / "emotion_distribution.png", chart)
    yield dg.MaterializeResult(
        asset_key="emotion_scores",
        metadata={
            **table_metadata(out.scores, scores_path),
            "emotion_distribution": dg.MetadataValue.json(distribution),
            "distribution_chart": dg.MetadataValue.md(plots.markdown_image(chart, "emotion distribution")),
            "distribution_chart_path": dg.MetadataValue.path(str(chart_path)),
            **common,
        },
    )
    yield dg.MaterializeResult(
        asset_key="emotion_segments",
        metadata={
            **table_metadata(out.segments, segments_path),
            "window_s": dg.MetadataValue.float(model.settings.window_s),
            **common,
        },
    )
    if frame_rows is not None:
        yield dg.MaterializeResult(
            asset_key="emotion_frames",
            metadata={
                "row_count": dg.MetadataValue.int(frame_rows),
                "path": dg.MetadataValue.path(str(frames_path)),
                **common,
            },
        )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[raw_audio, resampled_audio, dg.AssetKey("emotion_scores")],
    group_name="emotion",
    kinds={"parquet"},
)
def quarantine(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Every file of the day that a stage could not process, with the stage and the reason."""
    day = context.partition_key
    parts = [
        lake.read_rejects(storage.lake_dir, stage, day) for stage in ("raw_audio", "resampled_audio", EMOTION_STAGE)
    ]
    rows = pa.concat_tables([p for p in parts if p is not None] or [schemas.QUARANTINE.empty_table()])
    rows = rows.sort_by([("source_path", "ascending"), ("stage", "ascending")])
    path = lake.write_partition(storage.lake_dir, "quarantine", day, rows)
    with warehouse.connect(storage.warehouse_path) as con:
        warehouse.refresh_lake_views(con, storage.lake_dir)
    if rows.num_rows:
        context.log.warning(f"{day}: {rows.num_rows} file(s) quarantined")
    return dg.MaterializeResult(
        metadata=table_metadata(
            rows,
            path,
            by_stage=dg.MetadataValue.json(dict(Counter(rows.column("stage").to_pylist()))),
        )
    )
