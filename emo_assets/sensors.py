"""Late and new files: request a day's run when anything under ``data/raw/<day>/`` changes; and
publish the analysts' copy of the warehouse when a launched run ends."""

import json

import dagster as dg

from emo_assets.jobs import daily_emotion_job, day_run_request
from emo_assets.lib.analytics import rebuild
from emo_assets.lib.audio.landing import day_fingerprint, landed_days
from emo_assets.lib.store import day_lock, warehouse
from emo_assets.partitions import START_DATE
from emo_assets.resources import StorageResource, run_is_active


@dg.sensor(
    job=daily_emotion_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="One run per day folder of data/raw whose files are new or changed since the last run it "
    "requested; files still being written wait until they settle (EMO_SETTLE_S).",
)
def raw_files_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """Files still being written (the settle rule shared with every run: ``EMO_SETTLE_S``,
    lib/audio/settle.py) are left out of the fingerprint: the run takes the settled files and
    defers the others, and the fingerprint changes when they settle, so the next tick runs the day again.
    """
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    requests, skipped = [], []
    for day in landed_days(storage.raw_dir):
        if day < START_DATE:
            skipped.append(dg.SkipReason(f"{day} is before the first partition {START_DATE}"))
            continue
        fingerprint = day_fingerprint(storage.raw_dir / day, settle_s=storage.settle_seconds)
        if fingerprint is None or seen.get(day) == fingerprint:
            continue
        seen[day] = fingerprint
        requests.append(day_run_request(storage, day, run_key=f"{day}:{fingerprint[:16]}"))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


def _run_storage(storage: StorageResource, run: dg.DagsterRun) -> StorageResource:
    """The storage the run used: the launchpad's settings for that run win over the environment's."""
    given = (run.run_config or {}).get("resources", {}).get("storage", {}).get("config", {}) or {}
    fields = {k: v for k, v in given.items() if v is not None and k in StorageResource.model_fields}
    return StorageResource(**{**{k: getattr(storage, k) for k in StorageResource.model_fields}, **fields})


def _publish_after(context: dg.RunStatusSensorContext, storage: StorageResource) -> dg.SkipReason | None:
    storage = _run_storage(storage, context.dagster_run)
    in_flight = day_lock.days_in_flight(storage.locks_dir, lambda run_id: run_is_active(context.instance, run_id))
    try:
        done = rebuild.publish_warehouse(
            storage.warehouse_path, storage.lake_dir, storage.models_dir, storage.sql_models_dir, in_flight=in_flight
        )
    except (warehouse.WarehouseCorruptError, warehouse.WarehouseLockedError) as exc:
        context.log.error(str(exc))  # the analysts keep the version they had; the next run's end publishes
        return dg.SkipReason(f"not published: {exc}")
    context.log.info(f"published version {done.version} of {done.read_copy} ({len(done.written)} file(s) written)")
    return None


# One version of the warehouse per run: when a launched run of this code location ends (the UI, a
# schedule, a sensor, a backfill), what it wrote is published, successful or failed. `emo run`
# publishes itself (cli.py); so do tests that materialize (tests/helpers.py).
@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publish the analysts' copy of the warehouse (warehouse_read.duckdb) after a successful run.",
)
def publish_on_success_sensor(context: dg.RunStatusSensorContext, storage: StorageResource):
    return _publish_after(context, storage)


@dg.run_failure_sensor(
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publish the analysts' copy after a failed run: the steps that succeeded become visible.",
)
def publish_on_failure_sensor(context: dg.RunFailureSensorContext, storage: StorageResource):
    return _publish_after(context, storage)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publish the analysts' copy after a canceled run: the steps that finished become visible.",
)
def publish_on_cancel_sensor(context: dg.RunStatusSensorContext, storage: StorageResource):
    return _publish_after(context, storage)


PUBLISH_SENSORS = (publish_on_success_sensor, publish_on_failure_sensor, publish_on_cancel_sensor)
