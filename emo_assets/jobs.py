"""Jobs: a day of the whole graph, and the refit of the models fitted on every day."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from emo_assets.assets import all_asset_keys
from emo_assets.assets.analytics import emotion_cluster_model, satisfaction_model
from emo_assets.lib.analytics.fitted import is_stale
from emo_assets.partitions import daily_partitions
from emo_assets.resources import StorageResource, run_is_active

# The assets fitted on every day; each keeps its model in storage.fitted_model_path(<asset>).
FITTED_MODELS = (emotion_cluster_model.key, satisfaction_model.key)

# Run config that makes the model assets fit anew (their ModelFitConfig); without it they keep the
# fitted model that exists.
REFIT_RUN_CONFIG = {"ops": {key.to_python_identifier(): {"config": {"refit": True}} for key in FITTED_MODELS}}

# A launched run (the UI, a schedule, a sensor, `dagster job launch`) executes its steps one after
# another in the run's own process, like `emo run`: the project is imported once and the resources
# are built once. Dagster's default executor starts one process per step, each importing the world
# and building the resources anew (a day took 17x as long as `emo run`). Days still run in parallel,
# as separate runs (the run queue in dagster.yaml). Also the executor of runs of assets picked in
# the UI's asset graph (definitions.py).
RUN_EXECUTOR = dg.in_process_executor

# A run retried by the daemon (run_retries in dagster.yaml: a run whose process died) runs every step
# again, not only those that had not succeeded. Whichever step a run starts at claims the day for it
# (assets/repair.py: claim_day, in every step of a day), so
# no other run of the day can start while the retry writes (lib/store/day_lock.py).
RUN_TAGS = {"dagster/retry_strategy": "ALL_STEPS"}

daily_emotion_job = dg.define_asset_job(
    "daily_emotion_job",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    executor_def=RUN_EXECUTOR,
    tags=RUN_TAGS,
    description="One day from raw audio to the SQL models, in the run's own process. The models are "
    "fitted only while they do not exist yet (one fit at a time; parallel days use the version that "
    "exists); models_job refits.",
)

models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.assets(*FITTED_MODELS),
    executor_def=RUN_EXECUTOR,
    config=REFIT_RUN_CONFIG,
    description="Refit the cluster and satisfaction models on every day's distinct recordings and "
    "re-assign every day in the warehouse to the new model versions.",
)


def day_selection(storage: StorageResource, refit_models: bool = False) -> list[dg.AssetKey] | None:
    """Asset keys a day's run materializes: everything but the models that already exist."""
    existing = {
        key
        for key in FITTED_MODELS
        if storage.fitted_model_path(key.path[-1]).exists() and not is_stale(storage.fitted_model_path(key.path[-1]))
    }
    if refit_models or not existing:
        return None
    return [k for k in all_asset_keys(storage.sql_models_dir) if k not in existing]


def day_run_config(refit_models: bool = False) -> dict:
    """Run config of a day's run: :data:`REFIT_RUN_CONFIG` when the models are to be refitted."""
    return REFIT_RUN_CONFIG if refit_models else {}


def day_run_request(storage: StorageResource, day: str, run_key: str) -> dg.RunRequest:
    selection = day_selection(storage)
    return dg.RunRequest(run_key=run_key, partition_key=day, asset_selection=selection)


@dg.op(description="Delete raw audio, 16 kHz FLACs and table days older than the retention settings.")
def enforce_retention(context, storage: StorageResource) -> None:
    from emo_assets.lib.privacy import retention

    today = dt.datetime.now(dt.UTC).date()
    policy = retention.policy_of(storage)
    expired = retention.plan(storage, policy, today)
    counts = retention.apply(storage, expired, is_active=lambda run_id: run_is_active(context.instance, run_id))
    context.log.info(f"retention {policy} on {today}: deleted {counts or 'nothing'}")


@dg.job(
    executor_def=RUN_EXECUTOR,
    description="Enforce retention: EMO_KEEP_RAW_DAYS, EMO_KEEP_FLAC_DAYS, EMO_KEEP_TABLES_DAYS (unset: kept).",
)
def retention_job() -> None:
    enforce_retention()
