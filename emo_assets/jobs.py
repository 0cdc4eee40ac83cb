"""Jobs: a day of the whole graph, and the refit of the models fitted on every day."""

from __future__ import annotations

import dagster as dg

from emo_assets.assets import all_asset_keys
from emo_assets.partitions import daily_partitions
from emo_assets.resources import StorageResource

MODEL_ASSETS = {
    "emotion_cluster_model": "emotion_cluster_model.pkl",
    "satisfaction_model": "satisfaction_model.pkl",
}

daily_emotion_job = dg.define_asset_job(
    "daily_emotion_job",
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="One day from raw audio to the SQL models. The models fitted on every day are "
    "included only while they do not exist yet; models_job refits them.",
)

models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.assets(*MODEL_ASSETS),
    description="Refit the cluster and satisfaction models on every day of embeddings.",
)


def day_selection(storage: StorageResource, refit_models: bool = False) -> list[dg.AssetKey] | None:
    """Asset keys a day's run materializes: everything but the models that already exist."""
    existing = {name for name, file in MODEL_ASSETS.items() if (storage.models_dir / file).exists()}
    if refit_models or not existing:
        return None
    return [k for k in all_asset_keys() if k.path[-1] not in existing]


def day_run_request(storage: StorageResource, day: str, run_key: str) -> dg.RunRequest:
    selection = day_selection(storage)
    return dg.RunRequest(run_key=run_key, partition_key=day, asset_selection=selection)
