"""16 kHz recordings -> one emotion2vec+ pass -> ``emotion_embeddings``, ``emotion_scores`` and
``emotion_segments`` (and, opt-in, ``emotion_frames``); every file any stage could not process
-> ``quarantine``; the warehouse's side: ``embedding_index`` and ``lake_views``."""

from collections import Counter

import dagster as dg
import pyarrow as pa

from emo_assets.assets.audio import audio_files, resampled_audio
from emo_assets.assets.metadata import table_definition_metadata, table_description, table_metadata
from emo_assets.assets.rebuild import ensure_warehouse
from emo_assets.assets.repair import claim_day, day_input, repairs, reusable
from emo_assets.lib import schemas
from emo_assets.lib.analytics import similarity
from emo_assets.lib.audio.load import FlacReader
from emo_assets.lib.audio.resample import resolve_paths
from emo_assets.lib.audio.turns import find_turns
from emo_assets.lib.model.scoring import EMOTION_STAGE, frame_batches, score_day
from emo_assets.lib.results import plots
from emo_assets.lib.store import lake, warehouse
from emo_assets.partitions import daily_partitions
from emo_assets.resources import EmotionModelResource, RayResource, StorageResource

# The tables one pass of the model makes, each its own asset (selectable alone).
EMOTION_TABLES = ("emotion_embeddings", "emotion_scores", "emotion_segments", "emotion_frames")


def emotion_distribution(scores: pa.Table) -> dict[str, int]:
    counts = Counter(scores.column("emotion").to_pylist())
    return {label: counts.get(label, 0) for label in schemas.EMOTION_LABELS}


def _spec(table: str) -> dg.AssetSpec:
    entry = schemas.TABLES[table]
    return dg.AssetSpec(
        table,
        deps=[resampled_audio],
        kinds={"parquet"},
        group_name="emotion",
        description=table_description(table),
        metadata=table_definition_metadata(table),
        skippable=entry.opt_in,
    )


@dg.multi_asset(
    name="emotion_tables",
    specs=[_spec(t) for t in EMOTION_TABLES],
    partitions_def=daily_partitions,
    can_subset=True,
)
def emotion_tables(
    context: dg.AssetExecutionContext, storage: StorageResource, emotion_model: EmotionModelResource, ray: RayResource
):
    """One emotion2vec+ pass over the day's recordings (on the Ray cluster of ``ray.address`` when
    set); writes the selected emotion tables.

    Selecting one table (say ``emotion_scores``) writes that table only. Recordings scored by the
    same model in an earlier run of the day are reused, not run through the model again.
    """
    day = claim_day(context, storage)
    selected = {key.path[-1] for key in context.selected_asset_keys}
    model = emotion_model.load()
    if model.is_random:
        context.log.warning(
            f"model {model.model_id} has RANDOM weights: its emotions are meaningless (set EMO_MODEL for real ones)"
        )
    resampled = resolve_paths(day_input(storage, "resampled_audio", day, "resampled_audio"), storage.resampled_root)
    landed = day_input(storage, "audio_files", day, "audio_files")

    def progress(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            context.log.info(f"{day}: inference {done}/{total}")

    previous = {
        t: reusable(context, storage, t, day) for t in ("emotion_scores", "emotion_embeddings", "emotion_segments")
    }
    scoring = {
        "previous_scores": previous["emotion_scores"].rows,
        "previous_embeddings": previous["emotion_embeddings"].rows,
        "previous_segments": previous["emotion_segments"].rows,
        "open_audio": FlacReader,
        "find_turns": find_turns if emotion_model.speech_turns else None,
    }
    on_ray = {}
    if ray.address:
        from emo_assets.lib.model.ray_scoring import score_day_on_ray

        out, stats = score_day_on_ray(
            resampled,
            landed,
            model,
            day,
            address=ray.address,
            settings=emotion_model.settings(),
            actors=ray.actors,
            gpus_per_actor=ray.gpus_per_actor,
            log=context.log.info,
            **scoring,
        )
        on_ray = ray_metadata(stats)
        context.log.info(f"{day}: Ray model loads per actor process: {stats.loads}")
    else:
        out = score_day(resampled, landed, model, day, progress=progress, **scoring)
    if out.without_speech:
        context.log.info(f"{day}: {out.without_speech} channel(s) of scored recordings hold no speech: no rows")
    common = {
        "model_id": dg.MetadataValue.text(model.model_id),
        "random_weights": dg.MetadataValue.bool(model.is_random),
        "inferred": out.inferred,
        "reused_from_previous_run": out.reused,
        "quarantined": out.rejects.num_rows,
        **on_ray,
    }
    if "emotion_embeddings" in selected:
        path = lake.write_partition(storage.lake_dir, "emotion_embeddings", day, out.embeddings)
        yield dg.MaterializeResult(
            asset_key="emotion_embeddings",
            metadata={
                **table_metadata(out.embeddings, path),
                "embed_dim": model.embed_dim,
                **repairs(context, "emotion_embeddings", day, previous["emotion_embeddings"], out.embeddings),
                **common,
            },
        )
    if "emotion_scores" in selected:
        path = lake.write_partition(storage.lake_dir, "emotion_scores", day, out.scores)
        lake.write_rejects(storage.lake_dir, EMOTION_STAGE, day, out.rejects)
        yield dg.MaterializeResult(
            asset_key="emotion_scores",
            metadata={
                **table_metadata(out.scores, path),
                **_distribution_metadata(storage, day, out.scores),
                **repairs(context, "emotion_scores", day, previous["emotion_scores"], out.scores, out.repaired),
                **common,
            },
        )
    if "emotion_segments" in selected:
        path = lake.write_partition(storage.lake_dir, "emotion_segments", day, out.segments)
        yield dg.MaterializeResult(
            asset_key="emotion_segments",
            metadata={
                **table_metadata(out.segments, path),
                "window_s": dg.MetadataValue.float(model.settings.window_s),
                "segments": dg.MetadataValue.text(emotion_model.segments),
                "channels_without_speech": out.without_speech,
                **repairs(context, "emotion_segments", day, previous["emotion_segments"], out.segments),
                **common,
            },
        )
    if "emotion_frames" in selected and model.settings.frames:
        scored = list(zip(out.scores.column("audio_id").to_pylist(), out.scores.column("channel").to_pylist()))
        frames = frame_batches(model, resampled, day, scored, open_audio=FlacReader)
        frames_schema = schemas.emotion_frames_schema(model.embed_dim)
        path, rows = lake.write_partition_batches(storage.lake_dir, "emotion_frames", day, frames, frames_schema)
        yield dg.MaterializeResult(
            asset_key="emotion_frames",
            metadata={"row_count": dg.MetadataValue.int(rows), "path": dg.MetadataValue.path(str(path)), **common},
        )


def ray_metadata(stats) -> dict:
    """Where a day was scored on Ray: the cluster, its actors and each actor process's model loads."""
    return {
        "ray_address": dg.MetadataValue.text(stats.address),
        "ray_actors": stats.actors,
        "ray_batches": stats.batches,
        "ray_nodes": len(stats.nodes),
        "ray_model_loads": dg.MetadataValue.json(stats.loads),
        "ray_first_batch_s": dg.MetadataValue.float(stats.first_scored_s or 0.0),
    }


def _distribution_metadata(storage: StorageResource, day: str, scores: pa.Table) -> dict:
    """The day's emotion distribution over its recordings, one row each (``lake.voice_rows``: a
    two-channel call by its customer side), as numbers and as a chart (also written to data/reports/)."""
    recordings = lake.voice_rows(scores)
    distribution = emotion_distribution(recordings)
    chart = plots.distribution_png(distribution, f"Emotions on {day} ({recordings.num_rows} recordings)")
    chart_path = plots.write_png(storage.reports_dir / day / "emotion_distribution.png", chart)
    return {
        "emotion_distribution": dg.MetadataValue.json(distribution),
        "distribution_chart": dg.MetadataValue.md(plots.markdown_image(chart, "emotion distribution")),
        "distribution_chart_path": dg.MetadataValue.path(str(chart_path)),
    }


@dg.asset(
    partitions_def=daily_partitions,
    deps=[audio_files, resampled_audio, dg.AssetKey("emotion_scores")],
    group_name="emotion",
    kinds={"parquet"},
    metadata=table_definition_metadata("quarantine"),
)
def quarantine(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Every file of the day that a stage could not process, with the stage and the reason."""
    day = claim_day(context, storage)
    rows = lake.gather_rejects(storage.lake_dir, day)
    path = lake.write_partition(storage.lake_dir, "quarantine", day, rows)
    if rows.num_rows:
        context.log.warning(f"{day}: {rows.num_rows} file(s) quarantined")
    return dg.MaterializeResult(
        metadata=table_metadata(
            rows,
            path,
            by_stage=dg.MetadataValue.json(dict(Counter(rows.column("stage").to_pylist()))),
        )
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetKey("emotion_embeddings")],
    group_name="warehouse",
    kinds={"duckdb"},
    description=table_description("embedding_index")[:-1]
    + ", and the similar_audio / similar_embedding macros over it.",
    metadata=table_definition_metadata("embedding_index"),
)
def embedding_index(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    day = claim_day(context, storage)
    embeddings = lake.voice_rows(day_input(storage, "emotion_embeddings", day, "emotion_embeddings"))
    ensure_warehouse(context, storage)
    with warehouse.connect(storage.warehouse_path) as con:
        warehouse.replace_index_day(con, day, embeddings)
        similarity.create_similarity_macros(con)
    return dg.MaterializeResult(metadata={"row_count": embeddings.num_rows})


@dg.asset(
    partitions_def=daily_partitions,
    deps=[t for t in schemas.LAKE_TABLES if not schemas.TABLES[t].opt_in],
    group_name="warehouse",
    kinds={"duckdb"},
)
def lake_views(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """One DuckDB view per lake table over all its days, so analysts and SQL models query the lake.

    A table with no day yet gets an empty view with its columns, so SQL that reads it binds.
    """
    ensure_warehouse(context, storage)
    with warehouse.connect(storage.warehouse_path) as con:
        warehouse.refresh_lake_views(con, storage.lake_dir)
        views = [
            r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
        ]
    return dg.MaterializeResult(metadata={"views": dg.MetadataValue.json(views)})
