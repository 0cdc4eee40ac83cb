"""Load an emotion2vec+ model with funasr's own classes and score recordings with it.

`load_emotion_model` finds the model directory (`model_dir.resolve_model_dir`: a local directory, or
a hub id downloaded once by funasr's hub code), builds funasr's `Emotion2vec` and tokenizer from the
directory's `config.yaml` and `tokens.txt` as funasr's `AutoModel` does, and loads `model.pt`
memory-mapped, checking every tensor (funasr itself falls back to random weights with only a
printed warning). `EmotionModel.infer` gives the numbers of
`AutoModel.generate(granularity="utterance", extract_embedding=True)` (tested); scores are
reordered into `EMOTION_LABELS`.

No dagster here; torch and funasr are imported inside the functions that use them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emo_assets.lib.model.model_dir import (
    ModelLoadError,
    load_weights,
    read_config,
    read_marker,
    resolve_model_dir,
)
from emo_assets.lib.schemas import EMOTION_LABELS

if TYPE_CHECKING:
    import torch

__all__ = [
    "EMOTION_LABELS",
    "EmotionModel",
    "EmotionResult",
    "ModelLoadError",
    "check_setting",
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
    # Windows of a recording (start_s, end_s, embedding, scores); one window when it is short.
    segments: tuple = ()

    @property
    def emotion(self) -> str:
        return EMOTION_LABELS[int(np.argmax(self.scores))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.scores))


# ---- small pure helpers ------------------------------------------------------------------------


def _nvidia_driver_present() -> bool:
    """CUDA needs the NVIDIA kernel driver; without it torch.cuda.is_available() is False."""
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def resolve_device(device: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> the torch device to run on.

    Without an NVIDIA driver, `auto` is the CPU and torch is not imported (fast re-runs).
    """
    name = str(device).strip().lower()
    if name == "cpu" or (name == "auto" and not _nvidia_driver_present()):
        return "cpu"
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
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
    raise ModelLoadError(f"EMO_DEVICE={device!r} is not a device; allowed values: auto, cpu, cuda, cuda:N")


def check_half(device: str, half: bool) -> None:
    """Half precision runs on CUDA only."""
    if half and not device.startswith("cuda"):
        raise ModelLoadError(
            f"half precision (EMO_HALF) needs a CUDA device, but the model runs on {device!r}; "
            "set EMO_HALF=0, or EMO_DEVICE=cuda on a machine with a GPU"
        )


def inference_dtype(device: str, half: bool) -> torch.dtype:
    """float16 for `half` on CUDA, float32 otherwise; half precision on CPU is refused."""
    import torch

    check_half(device, half)
    return torch.float16 if half else torch.float32


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


PRECISIONS = ("fp32", "int8")


def check_precision(precision: str, device: str, half: bool) -> None:
    """int8 is dynamic quantisation on the CPU in float32; fp32 runs anywhere."""
    if precision not in PRECISIONS:
        raise ModelLoadError(f"EMO_PRECISION={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "int8" and (device != "cpu" or half):
        raise ModelLoadError(
            "EMO_PRECISION=int8 quantises for the CPU: set EMO_DEVICE=cpu and EMO_HALF=0, "
            "or use EMO_PRECISION=fp32 (with EMO_HALF=1 for speed) on a GPU"
        )


@functools.cache
def _malloc_trim():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return getattr(libc, "malloc_trim", None)  # glibc only


def release_freed_memory() -> None:
    """Hand memory freed by the last forward back to the OS (glibc's malloc_trim).

    Activations of clips of ever-changing lengths fragment glibc's heap: over a day of the large
    model, peak RSS grew by ~0.6 GB without this, at about 1 % of the time with it (BENCHMARKS.md).
    Other C libraries return freed memory themselves; there it is a no-op.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def cpu_threads() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ---- the model ---------------------------------------------------------------------------------


class EmotionModel:
    """A loaded emotion2vec+ network and the engine that scores recordings with it.

    Scoring runs through :class:`emo_assets.lib.model.inference.InferenceEngine` (same modules and
    weights as funasr, exact batching, windows for long recordings, optional int8 on CPU).
    """

    labels = EMOTION_LABELS

    def __init__(
        self,
        module: Any,
        tokens: Sequence[str],
        *,
        model_id: str,
        is_random: bool,
        device: str,
        dtype: torch.dtype,
        precision: str = "fp32",
        window_s: float = 30.0,
        batch_policy: str = "auto",
    ) -> None:
        import torch

        from emo_assets.lib.model.inference import InferenceEngine

        self.tokens = tuple(tokens)
        self.model_id = model_id
        self.is_random = is_random
        self.device = device
        self.dtype = dtype
        self.precision = precision
        self.embed_dim = int(module.cfg.get("embed_dim"))
        conv_layers = module.modality_encoders["AUDIO"].feature_enc_layers
        self.conv_layers = tuple(tuple(layer) for layer in conv_layers)
        self.min_samples = min_samples(self.conv_layers)
        self.engine = InferenceEngine(
            module,
            device=device,
            half=dtype == torch.float16,
            precision=precision,
            batch_policy=batch_policy,
            window_s=window_s,
            token_index=label_order(tokens),
        )
        # int8 runs on its own quantised copy: keep only the module the engine runs.
        self.module = self.engine.module

    def __repr__(self) -> str:
        return (
            f"EmotionModel({self.model_id!r}, device={self.device!r}, dtype={self.dtype}, precision={self.precision!r})"
        )

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[EmotionResult]:
        """Embedding, scores and windows per waveform (float32 mono 16 kHz).

        A recording up to ``window_s`` long gives funasr's utterance-mode numbers; a longer one is
        the duration-weighted mean over its windows (``segments``).
        """
        clips = [self._check_waveform(w, i) for i, w in enumerate(waveforms)]
        if not clips:
            return []
        results = [
            EmotionResult(embedding=out.embedding, scores=out.scores, segments=out.segments)
            for out in self.engine.embed(clips)
        ]
        release_freed_memory()
        return results

    def infer_frames(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame features [T, D] and per-frame scores [T, 9] at 50 frames per second.

        Features are funasr's `granularity="frame"` output. funasr gives no frame-level scores; we
        apply the same classification head (proj + softmax) to each frame.
        """
        out = self.engine.frames(self._check_waveform(waveform, 0))
        return out.embeddings, out.scores

    def _check_waveform(self, waveform: np.ndarray, index: int) -> np.ndarray:
        clip = np.asarray(waveform)
        if clip.ndim != 1:
            raise ValueError(
                f"waveform {index} has shape {clip.shape}; the emotion model takes mono 16 kHz "
                "audio as a 1-D array (downmix and resample it first)"
            )
        if not np.issubdtype(clip.dtype, np.floating):
            raise ValueError(f"waveform {index} has dtype {clip.dtype}; expected float samples in [-1, 1]")
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


@dataclass(frozen=True)
class CheckedSetting:
    """A model setting checked on this machine and resolved to its directory; no weights read."""

    device: str
    half: bool
    model_dir: Path
    model_id: str  # from emo_model.json, else the directory name
    is_random: bool
    config: dict[str, Any]


def check_setting(model: str, hub: str, device: str, half: bool, precision: str) -> CheckedSetting:
    """Check device, precision, hub and model directory (ModelLoadError names the bad setting and
    the fix) and read the model's config and marker. Loading and describing a model both start here."""
    resolved = resolve_device(device)
    check_half(resolved, half)
    check_precision(precision, resolved, half)
    model_dir, model_id = resolve_model_dir(model, hub)
    config = read_config(model_dir)
    marker = read_marker(model_dir)
    return CheckedSetting(
        device=resolved,
        half=half,
        model_dir=model_dir,
        model_id=str(marker.get("model_id") or model_id),
        is_random=bool(marker.get("random_weights", False)),
        config=config,
    )


def load_emotion_model(
    model: str = "iic/emotion2vec_plus_large",
    hub: str = "ms",
    device: str = "auto",
    half: bool = False,
    precision: str = "fp32",
    window_s: float = 30.0,
    batch_policy: str = "auto",
) -> EmotionModel:
    """Load `model` (hub id or local directory) through funasr and check its weights.

    Sets torch's CPU thread count to the cores available to this process.
    """
    import torch

    setting = check_setting(model, hub, device, half, precision)
    resolved, dtype, model_dir = setting.device, inference_dtype(setting.device, half), setting.model_dir
    threads = cpu_threads()
    torch.set_num_threads(threads)

    try:
        module, tokens = build_module(model_dir)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"funasr could not build the model in {model_dir} ({type(exc).__name__}: {exc}); "
            "re-download it or point EMO_MODEL at another model directory"
        ) from exc
    if dtype != torch.float32:
        module.to(dtype)
    module.eval()
    return EmotionModel(
        module,
        tokens,
        model_id=setting.model_id,
        is_random=setting.is_random,
        device=resolved,
        dtype=dtype,
        precision=precision,
        window_s=window_s,
        batch_policy=batch_policy,
    )


def build_module(model_dir) -> tuple[Any, list[str]]:
    """funasr's own model and tokenizer classes, built as funasr's AutoModel builds them from the
    directory's config.yaml and tokens.txt, but on the meta device, with ``model.pt`` memory-mapped
    and assigned in place: one copy of the weights, where AutoModel holds three while loading
    (random init, the loaded file, a deep copy). ``load_weights`` checks every tensor."""
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
    with torch.device("meta"):
        module = model_class(model_conf=OmegaConf.to_container(config.model_conf, resolve=True), vocab_size=len(tokens))
    # The pre-training decoder is not in published checkpoints and inference never runs it.
    module.modality_encoders["AUDIO"].remove_pretraining_modules(keep_decoder=False)
    scope_map = OmegaConf.to_container(config.scope_map) if config.get("scope_map") else None
    load_weights(module, model_dir / "model.pt", scope_map)
    return module, tokens


def _ms(num_samples: int) -> float:
    return 1000 * num_samples / SAMPLE_RATE
