"""A model setting checked and described from its files, and the weights loaded on first use.

Describing is fast (no torch model is built), so a run refuses a bad setting before it touches any
file, and a re-run that needs no inference never loads the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_assets.lib.model.emotion_model import EmotionModel, EmotionResult, ModelLoadError, check_setting, min_samples
from emo_assets.lib.schemas import EMOTION_LABELS


@dataclass(frozen=True)
class ModelDescription:
    """What a model setting resolves to, read from its files without loading the weights."""

    model_dir: Path
    model_id: str
    is_random: bool
    embed_dim: int
    min_samples: int
    device: str


def describe_model(
    model: str = "iic/emotion2vec_plus_large",
    hub: str = "ms",
    device: str = "auto",
    half: bool = False,
    precision: str = "fp32",
) -> ModelDescription:
    """Check every setting and read the model's config and marker: fast, no weights loaded.

    Raises ModelLoadError naming the setting and the fix for a bad device, precision, hub or
    model directory, so a run can refuse before it touches any file.
    """
    setting = check_setting(model, hub, device, half, precision)
    try:
        conf = setting.config["model_conf"]
        # funasr evaluates this same expression when it builds the model; no names are available.
        spec = eval(conf["modalities"]["audio"]["feature_encoder_spec"], {"__builtins__": {}}, {})  # noqa: S307
        embed_dim = int(conf["embed_dim"])
    except Exception as exc:  # noqa: BLE001 - any malformed config is one clear error
        raise ModelLoadError(
            f"{setting.model_dir / 'config.yaml'} does not describe an emotion2vec model ({type(exc).__name__}: {exc}); "
            "point EMO_MODEL at an emotion2vec+ model directory"
        ) from exc
    return ModelDescription(
        model_dir=setting.model_dir,
        model_id=setting.model_id,
        is_random=setting.is_random,
        embed_dim=embed_dim,
        min_samples=min_samples(spec),
        device=setting.device,
    )


class LazyEmotionModel:
    """A described model whose weights load on first use: re-running a day that needs no
    inference never pays for loading them."""

    labels = EMOTION_LABELS

    def __init__(self, description: ModelDescription, load: Callable[[], EmotionModel]) -> None:
        self.description = description
        self.model_id = description.model_id
        self.is_random = description.is_random
        self.embed_dim = description.embed_dim
        self.min_samples = description.min_samples
        self.device = description.device
        self._load = load
        self._model: EmotionModel | None = None

    def loaded(self) -> EmotionModel:
        if self._model is None:
            self._model = self._load()
        return self._model

    @property
    def engine(self):
        return self.loaded().engine

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[EmotionResult]:
        return self.loaded().infer(waveforms)

    def infer_frames(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.loaded().infer_frames(waveform)
