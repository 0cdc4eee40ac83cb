"""Late and new files: request a day's run when anything under ``data/raw/<day>/`` changes."""

import json

import dagster as dg

from emo_assets.jobs import daily_emotion_job, day_run_request
from emo_assets.lib.audio.landing import day_fingerprint, landed_days
from emo_assets.partitions import START_DATE
from emo_assets.resources import StorageResource


@dg.sensor(job=daily_emotion_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def raw_files_sensor(context: dg.SensorEvaluationContext, storage: StorageResource) -> dg.SensorResult:
    """One run per day folder whose files are new or changed since the last run it requested.

    Files still being written (the settle rule shared with every run: ``EMO_SETTLE_S``,
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
