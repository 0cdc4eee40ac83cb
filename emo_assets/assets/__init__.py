"""The asset graph, stage by stage: audio -> emotion -> analytics -> analysts' SQL."""

from __future__ import annotations

import functools
from pathlib import Path

import dagster as dg

from emo_assets.assets.analytics import (
    emotion_cluster_model,
    emotion_clusters,
    satisfaction_model,
    satisfaction_predictions,
)
from emo_assets.assets.arc import call_emotion_arc
from emo_assets.assets.audio import audio_files, resampled_audio
from emo_assets.assets.emotion import embedding_index, emotion_tables, lake_views, quarantine
from emo_assets.assets.similarity import similarity_index
from emo_assets.assets.sql_models import build_sql_model_assets
from emo_assets.resources import PACKAGED_SQL_DIR


@functools.cache
def all_assets(sql_dir: Path = PACKAGED_SQL_DIR) -> tuple[dg.AssetsDefinition, ...]:
    """Every asset: the pipeline's, then one per SQL model found in ``sql_dir``."""
    return (
        audio_files,
        resampled_audio,
        emotion_tables,
        call_emotion_arc,
        quarantine,
        embedding_index,
        lake_views,
        emotion_cluster_model,
        emotion_clusters,
        satisfaction_model,
        satisfaction_predictions,
        similarity_index,
        *build_sql_model_assets(Path(sql_dir)),
    )


def all_asset_keys(sql_dir: Path = PACKAGED_SQL_DIR) -> list[dg.AssetKey]:
    return sorted({key for a in all_assets(Path(sql_dir)) for key in a.keys}, key=lambda k: k.to_user_string())
