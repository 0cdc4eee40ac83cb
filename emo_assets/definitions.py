"""The one place the Definitions are built. Environment variables are wired here."""

from __future__ import annotations

import dagster as dg

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.jobs import daily_emotion_job, models_job
from emo_assets.resources import DEFAULT_MODEL, PROJECT_ROOT, EmotionModelResource, StorageResource
from emo_assets.schedules import daily_emotion_schedule, models_schedule
from emo_assets.sensors import raw_files_sensor

ENV_SETTINGS = {
    # env var: (resource, field, default)
    "EMO_DATA_DIR": ("storage", "data_dir", str(PROJECT_ROOT / "data")),
    "EMO_MODEL": ("emotion_model", "model", DEFAULT_MODEL),
    "EMO_MODEL_HUB": ("emotion_model", "hub", "ms"),
    "EMO_DEVICE": ("emotion_model", "device", "auto"),
    "EMO_PRECISION": ("emotion_model", "precision", "fp32"),
}


def _flag(name: str) -> bool:
    return dg.EnvVar(name).get_value("0").strip().lower() in ("1", "true", "yes")


def resources_from_env(**overrides) -> dict:
    """Resources from the EMO_* environment variables (or their defaults), then ``overrides``."""
    fields: dict[str, dict] = {"storage": {}, "emotion_model": {}}
    for name, (resource, field, default) in ENV_SETTINGS.items():
        fields[resource][field] = dg.EnvVar(name).get_value(default)
    fields["emotion_model"]["half"] = _flag("EMO_HALF")
    fields["emotion_model"]["frame_granularity"] = _flag("EMO_FRAMES")
    fields["emotion_model"]["window_s"] = float(dg.EnvVar("EMO_WINDOW_S").get_value("30"))
    for key, value in overrides.items():
        resource = "storage" if key == "data_dir" else "emotion_model"
        if value is not None:
            fields[resource][key] = value
    return {
        "storage": StorageResource(**fields["storage"]),
        "emotion_model": EmotionModelResource(**fields["emotion_model"]),
    }


def build_definitions(resources: dict) -> dg.Definitions:
    return dg.Definitions(
        assets=list(all_assets()),
        asset_checks=all_checks,
        jobs=[daily_emotion_job, models_job],
        schedules=[daily_emotion_schedule, models_schedule],
        sensors=[raw_files_sensor],
        resources=resources,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev -w workspace.yaml`: the environment is read when the code location loads."""
    return build_definitions(resources_from_env())
