"""Configuration of a run: where data lives, which model, which warehouse.

Every setting has a default that works offline on one laptop; ``definitions.py`` wires the
environment variables (EMO_DATA_DIR, EMO_MODEL, EMO_MODEL_HUB, EMO_DEVICE, ...).
"""

from __future__ import annotations

import functools
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "iic/emotion2vec_plus_large"


def run_is_active(instance: dg.DagsterInstance, run_id: str) -> bool:
    """True while the run is queued or in progress in ``instance`` (unknown runs are not)."""
    run = instance.get_run_by_id(run_id)
    return run is not None and not run.is_finished


class StorageResource(dg.ConfigurableResource):
    """The data directory: landing zone, lake, resampled audio, fitted models, reports."""

    data_dir: str = str(PROJECT_ROOT / "data")

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def lake_dir(self) -> Path:
        return self.root / "lake"

    @property
    def resampled_dir(self) -> Path:
        return self.root / "resampled"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labels"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def similarity_dir(self) -> Path:
        return self.root / "similarity"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"


class EmotionModelResource(dg.ConfigurableResource):
    """emotion2vec+ through funasr. ``model`` is a hub id or a local model directory."""

    model: str = DEFAULT_MODEL
    hub: str = "ms"
    device: str = "auto"
    half: bool = False
    precision: str = "fp32"
    window_s: float = 30.0
    frame_granularity: bool = False

    def load(self):
        """The model, described now (every setting checked) and loaded on first use.

        One copy of the weights per process, shared by every asset and check.
        """
        from emo_assets.lib.model.description import LazyEmotionModel, describe_model

        description = describe_model(self.model, self.hub, self.device, self.half, self.precision)
        return LazyEmotionModel(
            description,
            functools.partial(_load_model, self.model, self.hub, self.device, self.half, self.precision, self.window_s),
        )


@functools.lru_cache(maxsize=1)
def _load_model(model: str, hub: str, device: str, half: bool, precision: str, window_s: float):
    from emo_assets.lib.model.emotion_model import load_emotion_model

    return load_emotion_model(model=model, hub=hub, device=device, half=half, precision=precision, window_s=window_s)
