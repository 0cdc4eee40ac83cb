"""Load an emotion2vec+ model through funasr and score one recording at a time.

`load_emotion_model` finds the model directory (`model_dir.resolve_model_dir`), builds the network
with funasr's own `AutoModel` loading code, then checks that the weights really came from `model.pt`
(funasr falls back to random weights with only a printed warning). `EmotionModel.infer` reproduces
`AutoModel.generate(granularity="utterance", extract_embedding=True)` number for number; scores are
reordered into `EMOTION_LABELS`.

No dagster here; torch and funasr are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emo_assets.lib.model_dir import (
    ModelLoadError,
    read_config,
    read_marker,
    resolve_model_dir,
    verify_weights,
)
from emo_assets.lib.schemas import EMOTION_LABELS

if TYPE_CHECKING:
    import torch

__all__ = [
    "EMOTION_LABELS",
    "EmotionModel",
    "EmotionResult",
    "ModelLoadError",
    "cpu_threads",
    "inference_dtype",
    "label_order",
    "load_emotion_model",
    "min_samples",
    "num_frames",
    "resolve_device",
]

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class EmotionResult:
    """One recording: mean embedding [D] and class scores [9] in `EMOTION_LABELS` order."""

    embedding: np.ndarray
    scores: np.ndarray

    @property
    def emotion(self) -> str:
        return EMOTION_LABELS[int(np.argmax(self.scores))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.scores))


# ---- small pure helpers ------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> the torch device to run on."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"EMO_DEVICE={device!r} but CUDA is not available on this machine; "
                "set EMO_DEVICE=cpu or EMO_DEVICE=auto"
            )
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"EMO_DEVICE={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                "use cuda:0 .. cuda:N-1, or EMO_DEVICE=auto"
            )
        return name
    raise ModelLoadError(
        f"EMO_DEVICE={device!r} is not a device; allowed values: auto, cpu, cuda, cuda:N"
    )


def inference_dtype(device: str, half: bool) -> torch.dtype:
    """float16 for `half` on CUDA, float32 otherwise; half precision on CPU is refused."""
    import torch

    if not half:
        return torch.float32
    if not device.startswith("cuda"):
        raise ModelLoadError(
            f"half precision (EMO_HALF) needs a CUDA device, but the model runs on {device!r}; "
            "set EMO_HALF=0, or EMO_DEVICE=cuda on a machine with a GPU"
        )
    return torch.float16


def min_samples(conv_layers: Sequence[tuple[int, int, int]]) -> int:
    """Fewest input samples for which the conv feature extractor yields one frame.

    `conv_layers` is the feature_encoder_spec: (channels, kernel, stride) per layer.
    """
    needed = 1
    for _, kernel, stride in reversed(list(conv_layers)):
        needed = (needed - 1) * stride + kernel
    return needed


def num_frames(num_samples: int, conv_layers: Sequence[tuple[int, int, int]]) -> int:
    """Frames the conv feature extractor yields for `num_samples` samples (0 if too short)."""
    length = num_samples
    for _, kernel, stride in conv_layers:
        length = (length - kernel) // stride + 1
        if length <= 0:
            return 0
    return length


def label_order(tokens: Sequence[str]) -> tuple[int, ...]:
    """Index into `tokens` (the model's tokens.txt) of each of `EMOTION_LABELS`, in order.

    `生气/angry` is named by its English part, `<unk>` is `unknown`; `unuse*` placeholders are
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


def cpu_threads() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ---- the model ---------------------------------------------------------------------------------


class EmotionModel:
    """A loaded emotion2vec+ network (eval mode) and what is needed to score recordings."""

    labels = EMOTION_LABELS

    def __init__(
        self,
        module: Any,
        kwargs: dict[str, Any],
        *,
        model_id: str,
        is_random: bool,
        device: str,
        dtype: torch.dtype,
    ) -> None:
        import torch

        self.module = module
        self.kwargs = kwargs
        self.model_id = model_id
        self.is_random = is_random
        self.device = device
        self.dtype = dtype
        self.embed_dim = int(module.cfg.get("embed_dim"))
        conv_layers = module.modality_encoders["AUDIO"].feature_enc_layers
        self.conv_layers = tuple(tuple(layer) for layer in conv_layers)
        self.min_samples = min_samples(self.conv_layers)
        self._normalize = bool(module.cfg.get("normalize", False))
        tokens = list(kwargs["tokenizer"].token_list)
        self._label_index = torch.tensor(label_order(tokens), device=device)
        # funasr sets placeholder classes to -inf before the softmax; so do we.
        excluded = [token.startswith("unuse") for token in tokens]
        self._excluded = torch.tensor(excluded, dtype=torch.bool, device=device)

    def __repr__(self) -> str:
        return f"EmotionModel({self.model_id!r}, device={self.device!r}, dtype={self.dtype})"

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[EmotionResult]:
        """Embedding and scores per waveform (float32 mono 16 kHz), as funasr's utterance mode."""
        import torch

        clips = [self._check_waveform(w, i) for i, w in enumerate(waveforms)]
        results = []
        with torch.inference_mode():
            for clip in clips:
                frames = self._forward_one(clip)
                pooled = frames.mean(dim=0, keepdim=True)
                scores = self._scores(pooled)[0]
                results.append(
                    EmotionResult(
                        embedding=pooled[0].float().cpu().numpy(),
                        scores=scores.cpu().numpy(),
                    )
                )
        return results

    def infer_frames(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame features [T, D] and per-frame scores [T, 9] at 50 frames per second.

        Features are funasr's `granularity="frame"` output. funasr gives no frame-level scores; we
        apply the same classification head (proj + softmax) to each frame.
        """
        import torch

        clip = self._check_waveform(waveform, 0)
        with torch.inference_mode():
            frames = self._forward_one(clip)
            scores = self._scores(frames)
        return frames.float().cpu().numpy(), scores.cpu().numpy()

    def _forward_one(self, clip: np.ndarray) -> torch.Tensor:
        """Frame features [T, D] of one checked clip, in the model's dtype, on its device."""
        import torch
        import torch.nn.functional as F

        source = torch.from_numpy(clip).to(self.device)
        if self._normalize:
            source = F.layer_norm(source, source.shape)
        source = source.to(self.dtype).view(1, -1)
        return self.module.extract_features(source, padding_mask=None)["x"][0]

    def _scores(self, features: torch.Tensor) -> torch.Tensor:
        """Softmax of the classification head for each row of `features` -> [N, 9] float32."""
        import torch

        logits = self.module.proj(features).float()
        logits = logits.masked_fill(self._excluded, float("-inf"))
        return torch.softmax(logits, dim=-1).index_select(-1, self._label_index)

    def _check_waveform(self, waveform: np.ndarray, index: int) -> np.ndarray:
        clip = np.asarray(waveform)
        if clip.ndim != 1:
            raise ValueError(
                f"waveform {index} has shape {clip.shape}; the emotion model takes mono 16 kHz "
                "audio as a 1-D array (downmix and resample it first)"
            )
        if not np.issubdtype(clip.dtype, np.floating):
            raise ValueError(
                f"waveform {index} has dtype {clip.dtype}; expected float samples in [-1, 1]"
            )
        if clip.size < self.min_samples:
            raise ValueError(
                f"waveform {index} has {clip.size} samples ({_ms(clip.size):.1f} ms); the "
                f"emotion model needs at least {self.min_samples} samples "
                f"({_ms(self.min_samples):.1f} ms at 16 kHz)"
            )
        if not np.isfinite(clip).all():
            raise ValueError(f"waveform {index} contains NaN or infinite samples")
        return np.ascontiguousarray(clip, dtype=np.float32)


# ---- loading -----------------------------------------------------------------------------------


def load_emotion_model(
    model: str = "iic/emotion2vec_plus_large",
    hub: str = "ms",
    device: str = "auto",
    half: bool = False,
) -> EmotionModel:
    """Load `model` (hub id or local directory) through funasr and check its weights.

    Sets torch's CPU thread count to the cores available to this process.
    """
    import torch

    resolved = resolve_device(device)
    dtype = inference_dtype(resolved, half)
    model_dir, model_id = resolve_model_dir(model, hub)
    read_config(model_dir)
    marker = read_marker(model_dir)
    threads = cpu_threads()
    torch.set_num_threads(threads)

    from funasr import AutoModel

    try:
        with _preserved_rng():  # funasr reseeds python, numpy and torch RNGs while building
            auto = AutoModel(
                model=str(model_dir),
                hub=hub,
                device=resolved,
                ncpu=threads,
                disable_update=True,
                disable_pbar=True,
                log_level="WARNING",
            )
    except Exception as exc:
        raise ModelLoadError(
            f"funasr could not build the model in {model_dir} ({type(exc).__name__}: {exc}); "
            "re-download it or point EMO_MODEL at another model directory"
        ) from exc
    module = auto.model
    verify_weights(module, model_dir / "model.pt")
    if dtype != torch.float32:
        module.to(dtype)
    module.eval()
    return EmotionModel(
        module,
        auto.kwargs,
        model_id=str(marker.get("model_id") or model_id),
        is_random=bool(marker.get("random_weights", False)),
        device=resolved,
        dtype=dtype,
    )


def _ms(num_samples: int) -> float:
    return 1000 * num_samples / SAMPLE_RATE


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    import torch

    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
