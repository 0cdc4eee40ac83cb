"""The asset graph, stage by stage: audio -> emotion -> analytics -> analysts' SQL."""

from __future__ import annotations

import functools

import dagster as dg

from emo_assets.assets.analytics import (
    emotion_cluster_model,
    emotion_clusters,
    satisfaction_model,
    satisfaction_predictions,
)
from emo_assets.assets.audio import raw_audio, resampled_audio
from emo_assets.assets.emotion import emotion_inference, quarantine
from emo_assets.assets.similarity import similarity_index
from emo_assets.assets.sql_models import build_sql_model_assets


@functools.cache
def all_assets() -> tuple[dg.AssetsDefinition, ...]:
    return (
        raw_audio,
        resampled_audio,
        emotion_inference,
        quarantine,
        emotion_cluster_model,
        emotion_clusters,
        satisfaction_model,
        satisfaction_predictions,
        similarity_index,
        *build_sql_model_assets(),
    )


def all_asset_keys() -> list[dg.AssetKey]:
    return sorted({key for a in all_assets() for key in a.keys}, key=lambda k: k.to_user_string())
