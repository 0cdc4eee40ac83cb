"""Jobs: a day of the whole graph, and the refit of the models fitted on every day."""

from __future__ import annotations

import dagster as dg

from emo_assets.assets import all_asset_keys
from emo_assets.lib.analytics import clustering, satisfaction
from emo_assets.partitions import daily_partitions
from emo_assets.resources import StorageResource

MODEL_ASSETS = {clustering.ASSET: clustering.FILE_NAME, satisfaction.ASSET: satisfaction.FILE_NAME}

# Run config that makes the model assets fit anew (their ModelFitConfig); without it they keep the
# fitted model that exists.
REFIT_RUN_CONFIG = {"ops": {name: {"config": {"refit": True}} for name in MODEL_ASSETS}}

daily_emotion_job = dg.define_asset_job(
    "daily_emotion_job",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="One day from raw audio to the SQL models. The models are fitted only while they do "
    "not exist yet (one fit at a time; parallel days use the version that exists); models_job refits.",
)

models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.assets(*MODEL_ASSETS),
    config=REFIT_RUN_CONFIG,
    description="Refit the cluster and satisfaction models on every day's distinct recordings and "
    "re-assign every day in the warehouse to the new model versions.",
)


def day_selection(storage: StorageResource, refit_models: bool = False) -> list[dg.AssetKey] | None:
    """Asset keys a day's run materializes: everything but the models that already exist."""
    existing = {name for name, file in MODEL_ASSETS.items() if (storage.models_dir / file).exists()}
    if refit_models or not existing:
        return None
    return [k for k in all_asset_keys() if k.path[-1] not in existing]


def day_run_config(refit_models: bool = False) -> dict:
    """Run config of a day's run: :data:`REFIT_RUN_CONFIG` when the models are to be refitted."""
    return REFIT_RUN_CONFIG if refit_models else {}


def day_run_request(storage: StorageResource, day: str, run_key: str) -> dg.RunRequest:
    selection = day_selection(storage)
    return dg.RunRequest(run_key=run_key, partition_key=day, asset_selection=selection)
