"""Every day after midnight (UTC), process yesterday's recordings; every week, refit the models;
every day at 02:00, enforce retention."""

import datetime as dt

import dagster as dg

from emo_assets.jobs import daily_emotion_job, day_run_request, models_job, retention_job
from emo_assets.lib.store.deferred import days_with_deferred
from emo_assets.resources import StorageResource


@dg.schedule(
    job=daily_emotion_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    description="Run yesterday's day at 00:30 UTC, and again every day whose last run deferred files "
    "still being written (EMO_SETTLE_S), so that they are taken.",
)
def daily_emotion_schedule(context: dg.ScheduleEvaluationContext, storage: StorageResource) -> list[dg.RunRequest]:
    today = context.scheduled_execution_time.date()
    day = (today - dt.timedelta(days=1)).isoformat()
    requests = [day_run_request(storage, day, run_key=f"schedule:{day}")]
    for other in days_with_deferred(storage.lake_dir):
        if other != day:
            requests.append(day_run_request(storage, other, run_key=f"schedule:{other}:deferred:{today}"))
    return requests


models_schedule = dg.ScheduleDefinition(
    name="models_schedule",
    job=models_job,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    description="Refit the cluster and satisfaction models on every day so far, Mondays 03:00 UTC.",
)

retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Delete what is older than the retention settings (EMO_KEEP_*_DAYS), every day at 02:00 UTC.",
)
