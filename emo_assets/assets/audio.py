"""Raw recordings of a day -> ``audio_files``; -> 16 kHz mono FLAC and ``resampled_audio``.

Each asset writes its own lake table and the quarantine rows of its stage (the files it refused);
the ``quarantine`` asset gathers them."""

import datetime as dt

import dagster as dg
import pyarrow.compute as pc

from emo_assets.assets.metadata import table_definition_metadata, table_metadata
from emo_assets.assets.repair import claim_day, day_input, repairs, reusable
from emo_assets.lib import ray_cluster
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.audio.resample import resample_day
from emo_assets.lib.files import tombstones
from emo_assets.lib.files.faults import MachineFault, check_data_dir
from emo_assets.lib.schemas import Stage
from emo_assets.lib.store import lake
from emo_assets.lib.store.accounting import EmptyDayRefused, refuse_empty_day
from emo_assets.lib.store.deferred import write_deferred
from emo_assets.partitions import daily_partitions
from emo_assets.resources import RayResource, StorageResource


class AudioFilesConfig(dg.Config):
    """``allow_empty``: run the day even when its raw folder is missing or empty while it has results
    (which deletes them); `emo run --allow-empty` sets it."""

    allow_empty: bool = False


@dg.asset(
    partitions_def=daily_partitions,
    group_name="audio",
    kinds={"parquet"},
    metadata=table_definition_metadata("audio_files"),
)
def audio_files(
    context: dg.AssetExecutionContext, storage: StorageResource, config: AudioFilesConfig
) -> dg.MaterializeResult:
    """Every file under ``data/raw/<day>/`` that could be read (id = sha256 of the bytes); the
    first step of a day's run, so it also claims the day for the run. A day whose raw folder is
    missing or empty while it has results is refused unless the run config says ``allow_empty``."""
    day = context.partition_key
    try:
        check_data_dir(storage.root)
        storage.check_lake()
        refuse_empty_day(
            storage.raw_dir,
            storage.lake_dir,
            day,
            allow_empty=config.allow_empty,
            how="allow_empty: true (run config of audio_files)",
        )
    except (MachineFault, EmptyDayRefused) as exc:
        raise dg.Failure(str(exc)) from None
    claim_day(context, storage)
    previous = reusable(context, storage, "audio_files", day)
    out = ingest_day(
        storage.raw_dir,
        day,
        dt.datetime.now(dt.UTC),
        previous.rows,
        settle_s=storage.settle_seconds,
        erased=tombstones.erased_checker(storage.root),
    )
    path = lake.write_partition(storage.lake_dir, "audio_files", day, out.rows)
    lake.write_rejects(storage.lake_dir, Stage.AUDIO_FILES, day, out.rejects)
    write_deferred(storage.lake_dir, day, out.deferred)
    hours = pc.sum(out.rows.column("duration_s")).as_py() or 0.0
    context.log.info(f"{day}: {out.rows.num_rows} audio files, {out.rejects.num_rows} refused")
    deferred = out.deferred.column("source_path").to_pylist()
    if deferred:
        context.log.warning(
            f"{day}: {len(deferred)} file(s) still being written, deferred to the next run: {deferred[:20]}"
        )
    return dg.MaterializeResult(
        metadata=table_metadata(
            out.rows,
            path,
            hours_of_audio=dg.MetadataValue.float(hours / 3600),
            refused=out.rejects.num_rows,
            deferred=dg.MetadataValue.json(deferred),
            **repairs(context, "audio_files", day, previous, out.rows),
        )
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name="audio",
    deps=[audio_files],
    kinds={"parquet"},
    metadata=table_definition_metadata("resampled_audio"),
)
def resampled_audio(
    context: dg.AssetExecutionContext, storage: StorageResource, ray: RayResource
) -> dg.MaterializeResult:
    """Each distinct recording as 16 kHz mono FLAC under ``data/resampled/date=<day>/`` (with
    EMO_LAKE_URI, ``<lake_uri>/_resampled/date=<day>/`` in the object store); with ``ray.address``,
    each recording is decoded and resampled by a CPU task on that Ray cluster."""
    day = claim_day(context, storage)
    landed = day_input(storage, "audio_files", day, "audio_files")
    previous = reusable(context, storage, "resampled_audio", day)

    def resample(pool=None):
        return resample_day(
            landed,
            storage.raw_dir,
            storage.resampled_day_dir(day),
            day,
            previous=previous.rows,
            data_root=storage.resampled_root,
            pool=pool,
        )

    on_ray = {}
    if ray.address:
        with ray_cluster.connected(ray.address):
            tasks = ray_cluster.CpuTasks(name="resample")
            out = resample(tasks)
        on_ray = {"ray_address": dg.MetadataValue.text(ray.address), "ray_tasks": tasks.submitted}
        on_ray["ray_nodes"] = len(tasks.nodes)
        context.log.info(f"{day}: {tasks.submitted} recording(s) resampled by Ray tasks on {len(tasks.nodes)} node(s)")
    else:
        out = resample()
    path = lake.write_partition(storage.lake_dir, "resampled_audio", day, out.rows)
    lake.write_rejects(storage.lake_dir, Stage.RESAMPLED_AUDIO, day, out.rejects)
    # A row per recording, or per side of a two-channel call: the sides share their recording's duration.
    per_recording = out.rows.group_by("audio_id").aggregate([("duration_s", "max"), ("is_silent", "all")])
    recordings = per_recording.num_rows
    hours = (pc.sum(per_recording.column("duration_s_max")).as_py() or 0.0) / 3600
    silent = pc.sum(per_recording.column("is_silent_all").cast("int64")).as_py() or 0
    sides = f" ({out.rows.num_rows} channel rows)" if out.rows.num_rows != recordings else ""
    context.log.info(f"{day}: {recordings} recordings{sides} resampled, {out.rejects.num_rows} quarantined")
    return dg.MaterializeResult(
        metadata=table_metadata(
            out.rows,
            path,
            recordings=recordings,
            hours_of_audio=dg.MetadataValue.float(hours),
            silent_recordings=silent,
            quarantined=out.rejects.num_rows,
            **repairs(context, "resampled_audio", day, previous, out.rows),
            **on_ray,
        )
    )
