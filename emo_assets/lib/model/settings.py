"""The model's settings: one frozen value, checked when made and resolved to this machine once.

``ModelSettings(...)`` checks every value it can check without hardware (device spelling, precision,
hub, window, threads) and raises :class:`ModelSettingError` naming the setting (``EMO_*``) and the
accepted values. ``settings.resolved()`` returns a copy with ``device="auto"`` and ``threads=0``
replaced by what this machine has; a resolved value is what the model runs with, and what it reports.

Light on purpose: torch is imported only to look for CUDA, and only when an NVIDIA driver is present
or CUDA is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from emo_assets.lib.model.model_dir import HUBS, ModelLoadError

DEFAULT_MODEL = "iic/emotion2vec_plus_large"
PRECISIONS = ("fp32", "int8")
BATCH_POLICIES = ("auto", "per_clip", "masked")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class ModelSettingError(ModelLoadError, ValueError):
    """A model setting this machine cannot use; the message names the setting and its accepted values."""


WINDOW_OVERLAP_S = 1.0


def check_window_s(value: object, overlap_s: float = WINDOW_OVERLAP_S) -> float:
    """EMO_WINDOW_S as seconds, or ModelSettingError naming it and the accepted values.

    The window rule (:mod:`emo_assets.lib.model.windows`) needs windows longer than twice their
    overlap (every window longer than ``window_s / 2``, neighbours overlapping ``overlap_s``).
    """
    accepted = (
        f"use a number of seconds greater than {2 * overlap_s:g} (twice the {overlap_s:g} s window overlap), e.g. 30"
    )
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ModelSettingError(f"EMO_WINDOW_S={value!r} is not a number of seconds; {accepted}") from None
    if not (seconds > 2 * overlap_s and seconds != float("inf")):
        raise ModelSettingError(f"EMO_WINDOW_S={value!r} is too short for the window rule; {accepted}")
    return seconds


@dataclass(frozen=True)
class ModelSettings:
    """How to load and run emotion2vec+.

    ``model``: hub id or local model directory (EMO_MODEL); ``hub``: ``ms`` or ``hf`` (EMO_MODEL_HUB);
    ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (EMO_DEVICE); ``half``: float16, CUDA only
    (EMO_HALF); ``precision``: ``fp32`` or ``int8``, int8 being dynamic quantisation on the CPU
    (EMO_PRECISION); ``threads``: CPU threads for inference, 0 = the cores this process may use;
    ``window_s`` / ``window_overlap_s``: the window rule of :mod:`emo_assets.lib.model.windows`
    (EMO_WINDOW_S); ``frames``: also compute per-frame results (EMO_FRAMES); ``batch_policy``:
    ``per_clip`` (one window per forward, fastest on CPU), ``masked`` (padded batches of at most
    ``max_batch_s`` seconds of audio, for GPUs) or ``auto`` (per_clip on CPU, masked on GPUs).
    """

    model: str = DEFAULT_MODEL
    hub: str = "ms"
    device: str = "auto"
    half: bool = False
    precision: str = "fp32"
    threads: int = 0
    window_s: float = 30.0
    window_overlap_s: float = WINDOW_OVERLAP_S
    frames: bool = False
    batch_policy: str = "auto"
    max_batch_s: float = 240.0

    def __post_init__(self) -> None:
        device = str(self.device).strip().lower()
        object.__setattr__(self, "device", device)
        if not _DEVICE.fullmatch(device):
            raise ModelSettingError(
                f"EMO_DEVICE={self.device!r} is not a device; allowed values: auto, cpu, cuda, cuda:N"
            )
        if self.hub not in HUBS:
            raise ModelSettingError(
                f"EMO_MODEL_HUB={self.hub!r} is not a model hub; allowed values: ms (ModelScope), hf (Hugging Face)"
            )
        if self.precision not in PRECISIONS:
            raise ModelSettingError(f"EMO_PRECISION={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.precision == "int8" and (self.half or device.startswith("cuda")):
            raise ModelSettingError(
                "EMO_PRECISION=int8 quantises for the CPU: set EMO_DEVICE=cpu and EMO_HALF=0, "
                "or use EMO_PRECISION=fp32 (with EMO_HALF=1 for speed) on a GPU"
            )
        if self.half and device == "cpu":
            raise _half_on_cpu(device)
        # EMO_WINDOW_S against the overlap it is used with (an overlap too large for it is named below)
        check_window_s(self.window_s, min(self.window_overlap_s, WINDOW_OVERLAP_S))
        if not 0 <= self.window_overlap_s < self.window_s / 2:
            raise ModelSettingError(
                f"window_overlap_s={self.window_overlap_s} must be >= 0 and below half of EMO_WINDOW_S={self.window_s}"
            )
        if self.threads < 0:
            raise ModelSettingError(f"threads={self.threads} must be 0 (every core this process may use) or more")
        if self.batch_policy not in BATCH_POLICIES:
            raise ModelSettingError(f"batch_policy must be one of {BATCH_POLICIES}, got {self.batch_policy!r}")
        if not self.max_batch_s > 0:
            raise ModelSettingError(f"max_batch_s={self.max_batch_s} must be positive")

    def resolved(self, *, cuda_devices: int | None = None) -> ModelSettings:
        """These settings on this machine: the device, the thread count and the batch policy decided.

        Raises ModelSettingError for a CUDA device this machine lacks, or half precision on the CPU.
        """
        device = resolve_device(self.device, cuda_devices=cuda_devices)
        if self.half and device == "cpu":
            raise _half_on_cpu(device)
        if self.precision == "int8" and device != "cpu":
            raise ModelSettingError(
                f"EMO_PRECISION=int8 quantises for the CPU, but EMO_DEVICE={self.device!r} resolved to {device!r}: "
                "set EMO_DEVICE=cpu, or use EMO_PRECISION=fp32 on a GPU"
            )
        policy = self.batch_policy
        if policy == "auto":
            policy = "per_clip" if device == "cpu" else "masked"
        return dataclasses.replace(self, device=device, threads=self.threads or cpu_threads(), batch_policy=policy)


def _half_on_cpu(device: str) -> ModelSettingError:
    return ModelSettingError(
        f"half precision (EMO_HALF) needs a CUDA device, but the model runs on {device!r}; "
        "set EMO_HALF=0, or EMO_DEVICE=cuda on a machine with a GPU"
    )


def _nvidia_driver_present() -> bool:
    """CUDA needs the NVIDIA kernel driver; without it torch.cuda.is_available() is False."""
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str, *, cuda_devices: int | None = None) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> the torch device name to run on.

    ``cuda_devices`` is how many CUDA devices exist (default: ask torch). Without an NVIDIA driver,
    ``auto`` is the CPU and torch is not imported (fast re-runs).
    """
    name = str(device).strip().lower()
    if not _DEVICE.fullmatch(name):
        raise ModelSettingError(f"EMO_DEVICE={device!r} is not a device; allowed values: auto, cpu, cuda, cuda:N")
    if name == "cpu":
        return "cpu"
    if cuda_devices is None:
        cuda_devices = _cuda_device_count() if name != "auto" or _nvidia_driver_present() else 0
    if name == "auto":
        return "cuda" if cuda_devices else "cpu"
    if not cuda_devices:
        raise ModelSettingError(
            f"EMO_DEVICE={device!r} but CUDA is not available on this machine; set EMO_DEVICE=cpu or EMO_DEVICE=auto"
        )
    index = int(name[5:]) if ":" in name else 0
    if index >= cuda_devices:
        raise ModelSettingError(
            f"EMO_DEVICE={device!r} but only {cuda_devices} CUDA device(s) exist; "
            "use cuda:0 .. cuda:N-1, or EMO_DEVICE=auto"
        )
    return name


def cpu_threads() -> int:
    """CPU cores this process may run on (respects taskset and cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the block, restoring the previous value after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
