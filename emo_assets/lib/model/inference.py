"""Exact batched emotion2vec+ inference over funasr's own ``Emotion2vec`` module.

``InferenceEngine`` runs the same modules with the same weights as ``funasr.AutoModel.generate`` and
gives the same numbers (parity is tested per clip, for both batch policies):

* the forward itself is :func:`emo_assets.lib.model.masked_forward.encode` (per-waveform normalisation,
  padding masks that nothing leaks through, channels-last convs, fused attention);
* long recordings are cut into windows (rule in :mod:`emo_assets.lib.model.windows`) so memory is bounded
  and time grows linearly with length; a recording's result is the duration-weighted mean;
* on CPU one single-threaded forward runs per core (clips are independent), which measured faster
  than one forward spread over all cores; on GPUs windows are packed into masked padded batches;
* ``precision="int8"`` quantises the linear layers and the conv front end dynamically (CPU only);
  ``half`` runs float16 on CUDA, bfloat16 on CPU.

No dagster import. Callers map the model's tokens to canonical emotion names (``token_index``).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from emo_assets.lib.model.masked_forward import conv_front_end_gemms, encode, quantize_int8
from emo_assets.lib.model.windows import (
    SAMPLE_RATE,
    WindowPlan,
    frame_keep_ranges,
    pack_batches,
    plan_windows,
    weighted_mean,
)

PRECISIONS = ("fp32", "int8")
BATCH_POLICIES = ("auto", "per_clip", "masked")


@dataclass(frozen=True)
class Segment:
    """One scored window of a recording."""

    start_s: float
    end_s: float
    embedding: np.ndarray  # float32[D], mean over the window's frames
    scores: np.ndarray  # float32[K], softmax over the selected tokens


@dataclass(frozen=True)
class UtteranceOutput:
    """A recording's result: duration-weighted means over its windows (one window if short)."""

    embedding: np.ndarray  # float32[D]
    scores: np.ndarray  # float32[K]
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class FrameOutput:
    """Per-frame (50 Hz) output, like funasr ``granularity="frame"`` plus per-frame scores."""

    times_s: np.ndarray  # float64[T], start of each frame in the recording
    embeddings: np.ndarray  # float32[T, D]
    scores: np.ndarray  # float32[T, K], softmax of the classification head on each frame


# ---------------------------------------------------------------- device, dtype and threads


def resolve_device(device: str = "auto", *, cuda_available: bool | None = None) -> torch.device:
    """``"auto"`` is CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if device == "auto":
        return torch.device("cuda" if cuda_available else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not cuda_available:
        raise ValueError(f"device={device!r} but CUDA is not available; use device='auto' or 'cpu'")
    return resolved


def resolve_dtype(device: torch.device, half: bool) -> torch.dtype:
    """float32, or with ``half`` float16 on CUDA and bfloat16 on CPU (fp16 matmuls are slow there)."""
    if not half:
        return torch.float32
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def resolve_batch_policy(policy: str, device: torch.device) -> str:
    """``auto``: one clip per forward on CPU (measured faster there), masked batches on GPUs."""
    if policy not in BATCH_POLICIES:
        raise ValueError(f"batch_policy must be one of {BATCH_POLICIES}, got {policy!r}")
    if policy == "auto":
        return "masked" if device.type == "cuda" else "per_clip"
    return policy


def default_num_threads() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    return len(os.sched_getaffinity(0))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the block, restoring the previous value after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_module(module: nn.Module, *, device: torch.device, dtype: torch.dtype, precision: str) -> nn.Module:
    """Return the module ready to run: eval mode, on ``device`` in ``dtype``, optionally int8.

    The caller's module is reused when it already matches; otherwise a copy is made, so the input
    module is never changed.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8":
        if device.type != "cpu" or dtype != torch.float32:
            raise ValueError(
                "precision='int8' is dynamic quantisation for CPU in float32; "
                "use device='cpu' without half, or precision='fp32' on GPUs"
            )
        names = {n for n, m in module.named_modules() if isinstance(m, nn.Linear) and n != "proj"}
        return quantize_int8(copy.deepcopy(module).to("cpu", torch.float32).eval(), names)
    param = next(module.parameters())
    if param.device == device and param.dtype == dtype and not module.training:
        return module
    return copy.deepcopy(module).to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------- the engine


class InferenceEngine:
    """Batched, windowed emotion2vec+ inference with funasr's numbers.

    ``module`` is funasr's ``Emotion2vec`` (``AutoModel(...).model``). ``token_index`` lists the
    model-vocabulary indices to score, in output order; the softmax runs over those tokens only
    (funasr masks its ``unuse*`` tokens to -inf the same way). ``batch_policy="per_clip"`` runs one
    window per forward (no padding; fastest on CPU), ``"masked"`` packs windows sorted by length
    into padded batches of at most ``max_batch_samples`` samples with masks (exact too; for GPUs).
    ``num_threads`` CPU threads (default: the cores this process may use) are shared by ``workers``
    concurrent forwards (default on CPU per-clip: one single-threaded forward per core, which
    measured faster than one forward over all cores; otherwise 1).

    ``window_s`` / ``window_overlap_s``: the window rule of :mod:`emo_assets.lib.model.windows`.
    ``half``: float16 on CUDA, bfloat16 on CPU (not exact). ``precision="int8"`` (CPU only):
    dynamic int8 for every linear layer but the classification head and, with ``int8_front_end``,
    for the conv front end after its first layer; measured on the large architecture: embedding
    cosine >= 0.9996 and scores within 0.003 of fp32 (BENCHMARKS.md). The caller's module is never
    changed: casting or quantising works on a copy.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        device: str = "auto",
        half: bool = False,
        precision: str = "fp32",
        batch_policy: str = "auto",
        max_batch_samples: int = 4 * 60 * SAMPLE_RATE,
        window_s: float = 30.0,
        window_overlap_s: float = 1.0,
        token_index: Sequence[int] | None = None,
        num_threads: int | None = None,
        workers: int | None = None,
        int8_front_end: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, half)
        self.precision = precision
        self.batch_policy = resolve_batch_policy(batch_policy, self.device)
        enc = module.modality_encoders["AUDIO"]
        if self.batch_policy == "masked" and enc.modality_cfg.extractor_mode != "layer_norm":
            raise ValueError(
                "batch_policy='masked' needs extractor_mode='layer_norm' (group norm over time "
                "would mix padding into valid frames); use batch_policy='per_clip'"
            )
        if module.proj is None:
            raise ValueError("the model has no classification head (vocab_size <= 0); emotion2vec+ has one")
        self.module = prepare_module(module, device=self.device, dtype=self.dtype, precision=precision)
        self.conv_gemms = None
        if precision == "int8" and int8_front_end and enc.modality_cfg.extractor_mode == "layer_norm":
            self.conv_gemms = conv_front_end_gemms(module)
        self.max_batch_samples = int(max_batch_samples)
        self.window_s = float(window_s)
        self.window_overlap_s = float(window_overlap_s)
        plan_windows(1, window_s=self.window_s, overlap_s=self.window_overlap_s)  # validates both
        n_tokens = module.proj.out_features
        self.token_index = list(range(n_tokens)) if token_index is None else list(token_index)
        if not self.token_index or not all(0 <= t < n_tokens for t in self.token_index):
            raise ValueError(f"token_index must hold indices in [0, {n_tokens}), got {token_index}")
        self.num_threads = num_threads or default_num_threads()
        if workers is None:
            cpu_per_clip = self.device.type == "cpu" and self.batch_policy == "per_clip"
            workers = self.num_threads if cpu_per_clip else 1
        if not 1 <= workers <= self.num_threads:
            raise ValueError(f"workers must be between 1 and num_threads={self.num_threads}, got {workers}")
        self.workers = workers
        self.conv_spec = list(enc.feature_enc_layers)
        self.frame_hop = int(np.prod([stride for _, _, stride in self.conv_spec]))
        self.min_samples = self._min_samples()
        self.embed_dim = int(module.cfg.get("embed_dim"))

    def _min_samples(self) -> int:
        n = 1
        for _, kernel, stride in reversed(self.conv_spec):
            n = (n - 1) * stride + kernel
        return n

    # ------------------------------------------------------------ public API

    def embed(self, waveforms: Sequence[np.ndarray]) -> list[UtteranceOutput]:
        """Score each 16 kHz mono float waveform; long ones window by window."""
        waves = [self._check(w, i) for i, w in enumerate(waveforms)]
        plans = [
            WindowPlan(i, s, e)
            for i, w in enumerate(waves)
            for s, e in plan_windows(len(w), window_s=self.window_s, overlap_s=self.window_overlap_s)
        ]
        pooled = self._run(waves, plans, keep_frames=False)
        by_recording: list[list[Segment]] = [[] for _ in waves]
        for plan, (embedding, scores) in zip(plans, pooled, strict=True):
            by_recording[plan.index].append(
                Segment(plan.start / SAMPLE_RATE, plan.end / SAMPLE_RATE, embedding, scores)
            )
        outputs = []
        for segments in by_recording:
            weights = [s.end_s - s.start_s for s in segments]
            outputs.append(
                UtteranceOutput(
                    embedding=weighted_mean([s.embedding for s in segments], weights),
                    scores=weighted_mean([s.scores for s in segments], weights),
                    segments=tuple(segments),
                )
            )
        return outputs

    def frames(self, waveform: np.ndarray) -> FrameOutput:
        """Per-frame embeddings and scores of one recording (windows stitched without duplicates)."""
        wave = self._check(waveform, 0)
        spans = plan_windows(len(wave), window_s=self.window_s, overlap_s=self.window_overlap_s)
        plans = [WindowPlan(0, s, e) for s, e in spans]
        feats = self._run([wave], plans, keep_frames=True)
        keep = frame_keep_ranges(spans, [len(f) for f in feats], self.frame_hop)
        times, chunks = [], []
        for (start, _), f, (lo, hi) in zip(spans, feats, keep, strict=True):
            chunks.append(f[lo:hi])
            times.append((start + np.arange(lo, hi) * self.frame_hop) / SAMPLE_RATE)
        x = np.concatenate(chunks)
        with torch_threads(self.num_threads), torch.inference_mode():
            logits = self.module.proj(torch.from_numpy(x).to(self.device, self._head_dtype()))
            scores = self._softmax(logits)
        return FrameOutput(np.concatenate(times), x, scores)

    # ------------------------------------------------------------ internals

    def _check(self, waveform: np.ndarray, i: int) -> np.ndarray:
        wave = np.asarray(waveform, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"waveform {i} has shape {wave.shape}; pass 16 kHz mono 1-D arrays")
        if len(wave) < self.min_samples:
            raise ValueError(
                f"waveform {i} has {len(wave)} samples; the model needs at least {self.min_samples} "
                f"({self.min_samples / SAMPLE_RATE * 1000:.0f} ms) - drop or pad such clips first"
            )
        return wave

    def _head_dtype(self) -> torch.dtype:
        return self.module.proj.weight.dtype

    def _softmax(self, logits: torch.Tensor) -> np.ndarray:
        selected = logits.float()[..., self.token_index]
        return torch.softmax(selected, dim=-1).cpu().numpy()

    def _batches(self, plans: Sequence[WindowPlan]) -> list[list[int]]:
        if self.batch_policy == "per_clip":
            return [[i] for i in sorted(range(len(plans)), key=lambda i: -plans[i].n_samples)]
        return pack_batches([p.n_samples for p in plans], self.max_batch_samples)

    def _run(self, waves, plans, *, keep_frames: bool):
        """Forward every window; per window either pooled ``(embedding, scores)`` or frames.

        With several workers, batches run concurrently on Python threads (torch releases the GIL),
        each with ``num_threads // workers`` intra-op threads; longest batches are started first.
        """
        batches = self._batches(plans)

        def work(batch: list[int]) -> tuple[list[int], list]:
            with torch.inference_mode():  # thread-local, so entered in every worker
                return batch, self._forward(waves, plans, batch, keep_frames)

        results: list = [None] * len(plans)
        workers = min(self.workers, len(batches))
        with torch_threads(max(1, self.num_threads // workers)):
            if workers == 1:
                done = map(work, batches)
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="emo-infer") as pool:
                    done = list(pool.map(work, batches))
            for batch, rows in done:
                for i, row in zip(batch, rows, strict=True):
                    results[i] = row
        return results

    def _forward(self, waves, plans, batch: list[int], keep_frames: bool) -> list:
        longest = max(plans[i].n_samples for i in batch)
        wave = torch.zeros(len(batch), longest)
        for row, i in enumerate(batch):
            p = plans[i]
            wave[row, : p.n_samples] = torch.from_numpy(waves[p.index][p.start : p.end])
        lengths = torch.tensor([plans[i].n_samples for i in batch])
        x, frame_lengths = encode(self.module, wave.to(self.device), lengths.to(self.device), self.conv_gemms)
        if keep_frames:
            return [x[row, :n].float().cpu().numpy() for row, n in enumerate(frame_lengths.tolist())]
        keep = torch.arange(x.shape[1], device=x.device) < frame_lengths.unsqueeze(1)
        mean = (x.float() * keep.unsqueeze(-1)).sum(1) / frame_lengths.unsqueeze(1)
        scores = self._softmax(self.module.proj(mean.to(self._head_dtype())))
        mean = mean.cpu().numpy()
        return [(mean[row], scores[row]) for row in range(len(batch))]
