"""From settings to a model: described from its files first (fast), loaded through funasr when needed.

:func:`describe_model` resolves the settings on this machine, finds the model directory
(:func:`~emo_assets.lib.model.model_dir.resolve_model_dir`: a local directory, or a hub id downloaded
once by funasr's hub code) and reads its config and marker, without building a network: a run
refuses a bad setting before it touches any file. :func:`load_model` builds funasr's ``Emotion2vec``
and tokenizer from the directory's ``config.yaml`` and ``tokens.txt`` as funasr's ``AutoModel`` does,
loads ``model.pt`` memory-mapped with every tensor checked (funasr itself falls back to random weights
with only a printed warning), and returns the :class:`~emo_assets.lib.model.engine.EmotionModel`.
:class:`LazyEmotionModel` is a description whose weights load on first use; both satisfy
:class:`~emo_assets.lib.model.scorer.EmotionScorer`.

No dagster here; torch and funasr are imported inside the functions that use them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emo_assets.lib.model.model_dir import ModelLoadError, load_weights, read_config, read_marker, resolve_model_dir
from emo_assets.lib.model.scorer import AudioReader, EmotionResult, EmotionScorer, Frames
from emo_assets.lib.model.settings import ModelSettings
from emo_assets.lib.model.windows import min_samples
from emo_assets.lib.schemas import EMOTION_LABELS

if TYPE_CHECKING:
    from emo_assets.lib.model.engine import EmotionModel
    from emo_assets.lib.model.int8 import Int8Network


@dataclass(frozen=True)
class ModelDescription:
    """What a model setting resolves to, read from its files without loading the weights."""

    settings: ModelSettings  # resolved on this machine
    model_dir: Path
    model_id: str  # from emo_model.json, else the hub id or directory name
    is_random: bool
    embed_dim: int
    min_samples: int


def describe_model(settings: ModelSettings) -> ModelDescription:
    """Resolve ``settings`` and read the model's config and marker: fast, no weights loaded.

    Raises ModelLoadError naming the setting and the fix for a device this machine lacks, a hub or
    model directory that does not hold an emotion2vec+ model.
    """
    resolved = settings.resolved()
    model_dir, model_id = resolve_model_dir(resolved.model, resolved.hub)
    config = read_config(model_dir)
    marker = read_marker(model_dir)
    try:
        conf = config["model_conf"]
        # funasr evaluates this same expression when it builds the model; no names are available.
        spec = eval(conf["modalities"]["audio"]["feature_encoder_spec"], {"__builtins__": {}}, {})  # noqa: S307
        embed_dim = int(conf["embed_dim"])
    except Exception as exc:  # noqa: BLE001 - any malformed config is one clear error
        raise ModelLoadError(
            f"{model_dir / 'config.yaml'} does not describe an emotion2vec model ({type(exc).__name__}: {exc}); "
            "point EMO_MODEL at an emotion2vec+ model directory"
        ) from exc
    return ModelDescription(
        settings=resolved,
        model_dir=model_dir,
        model_id=str(marker.get("model_id") or model_id),
        is_random=bool(marker.get("random_weights", False)),
        embed_dim=embed_dim,
        min_samples=min_samples(spec),
    )


def load_model(model: ModelSettings | ModelDescription) -> EmotionModel:
    """Load the model of these settings (or of this description) through funasr, weights checked."""
    import torch

    from emo_assets.lib.model.engine import EmotionModel, inference_dtype

    description = describe_model(model) if isinstance(model, ModelSettings) else model
    settings = description.settings
    int8 = None
    try:
        if settings.precision == "int8":
            int8, tokens = _int8_network(description.model_dir)
            module = int8.module
        else:
            module, tokens = build_module(description.model_dir)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"funasr could not build the model in {description.model_dir} ({type(exc).__name__}: {exc}); "
            "re-download it or point EMO_MODEL at another model directory"
        ) from exc
    dtype = inference_dtype(settings.device, settings.half)
    if int8 is None and (settings.device, dtype) != ("cpu", torch.float32):
        module.to(device=settings.device, dtype=dtype)  # in place: one copy of the weights
    module.eval()
    return EmotionModel(
        module,
        settings,
        token_index=label_order(tokens),
        model_id=description.model_id,
        is_random=description.is_random,
        int8=int8,
    )


def _int8_network(model_dir: Path) -> tuple[Int8Network, list[str]]:
    """The int8 network from its cache beside the model (quantised and cached on a miss), and the tokens."""
    from emo_assets.lib.model.int8 import load_int8

    tokens: list[str] = []

    def build(weights: bool):
        module, tokens[:] = build_module(model_dir, weights=weights)
        return module.eval()

    return load_int8(model_dir, lambda: build(False), lambda: build(True)), tokens


def build_module(model_dir: Path, *, weights: bool = True) -> tuple[Any, list[str]]:
    """funasr's own model and tokenizer classes, built as funasr's AutoModel builds them from the
    directory's config.yaml and tokens.txt, but on the meta device, with ``model.pt`` memory-mapped
    and assigned in place: one copy of the weights, where AutoModel holds three while loading
    (random init, the loaded file, a deep copy). ``load_weights`` checks every tensor.
    ``weights=False``: the network stays on the meta device, for a cached int8 state to fill."""
    import torch
    from omegaconf import OmegaConf

    from emo_assets.lib.model.funasr_import import funasr_class  # funasr's classes, without its 14 s init

    config = OmegaConf.load(model_dir / "config.yaml")
    tokenizer_conf = OmegaConf.to_container(config.get("tokenizer_conf") or {}, resolve=True)
    tokenizer = funasr_class("tokenizer_classes", config.tokenizer)(
        **{**tokenizer_conf, "token_list": str(model_dir / "tokens.txt")}
    )
    tokens = list(tokenizer.token_list)
    model_class = funasr_class("model_classes", config.model)
    if model_class is None:
        raise ModelLoadError(f"{model_dir / 'config.yaml'} names model {config.model!r}, which funasr does not know")
    with torch.device("meta"), _no_random_init():
        module = model_class(model_conf=OmegaConf.to_container(config.model_conf, resolve=True), vocab_size=len(tokens))
    # The pre-training decoder is not in published checkpoints and inference never runs it.
    module.modality_encoders["AUDIO"].remove_pretraining_modules(keep_decoder=False)
    if weights:
        scope_map = OmegaConf.to_container(config.scope_map) if config.get("scope_map") else None
        load_weights(module, model_dir / "model.pt", scope_map)
    return module, tokens


@contextmanager
def _no_random_init() -> Iterator[None]:
    """``torch.nn.init``'s in-place initialisers as no-ops while a network is built on the meta device.

    Meta tensors hold no data, so a random init there computes nothing, but its meta kernels run
    through ``torch._refs``, whose first call imports ``torch._dynamo``: about 2 s of every start,
    for nothing. Every tensor is then assigned from ``model.pt`` (``load_weights`` checks each one)
    or from the int8 cache. The swap is process-wide for the few milliseconds of the build.
    """
    import torch.nn.init as init

    names = [name for name in dir(init) if name.endswith("_") and not name.startswith("_")]
    saved = {name: getattr(init, name) for name in names}
    for name in names:
        setattr(init, name, _unchanged)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


def _unchanged(tensor: Any, *args: Any, **kwargs: Any) -> Any:
    return tensor


def label_order(tokens: Sequence[str]) -> tuple[int, ...]:
    """Index into ``tokens`` (the model's tokens.txt) of each of ``EMOTION_LABELS``, in order.

    ``生气/angry`` is named by its English part, ``<unk>`` is ``unknown``; ``unuse*`` placeholders are
    skipped as funasr skips them.
    """
    index: dict[str, int] = {}
    unexpected = []
    for i, token in enumerate(tokens):
        if token.startswith("unuse"):
            continue
        name = "unknown" if token == "<unk>" else token.split("/")[-1].strip().lower()
        if name in EMOTION_LABELS and name not in index:
            index[name] = i
        else:
            unexpected.append(token)
    missing = [label for label in EMOTION_LABELS if label not in index]
    if missing or unexpected:
        raise ModelLoadError(
            f"the model's tokens.txt does not hold the 9 emotion2vec+ classes "
            f"(missing: {missing or 'none'}; unexpected: {unexpected or 'none'}); "
            "point EMO_MODEL at an emotion2vec+ model (e.g. iic/emotion2vec_plus_large)"
        )
    return tuple(index[label] for label in EMOTION_LABELS)


class LazyEmotionModel:
    """A described model whose weights load on first use: re-running a day that needs no
    inference never pays for loading them. An :class:`EmotionScorer` like the loaded model."""

    labels = EMOTION_LABELS

    def __init__(self, description: ModelDescription, load: Callable[[], EmotionScorer]) -> None:
        self.description = description
        self.settings = description.settings
        self.model_id = description.model_id
        self.is_random = description.is_random
        self.embed_dim = description.embed_dim
        self.min_samples = description.min_samples
        self._load = load
        self._model: EmotionScorer | None = None

    def loaded(self) -> EmotionScorer:
        if self._model is None:
            self._model = self._load()
        return self._model

    def score(self, recordings: Sequence[AudioReader]) -> list[EmotionResult]:
        return self.loaded().score(recordings)

    def frames(self, recording: AudioReader) -> Iterator[Frames]:
        return self.loaded().frames(recording)

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[EmotionResult]:
        return self.loaded().infer(waveforms)

    def infer_frames(self, waveform: np.ndarray) -> Frames:
        return self.loaded().infer_frames(waveform)
