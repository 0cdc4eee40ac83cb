"""The loaded emotion2vec+ model: exact, windowed, batched inference over funasr's own ``Emotion2vec``.

:class:`EmotionModel` runs the same modules with the same weights as ``funasr.AutoModel.generate``
and gives the same numbers (parity is tested per clip, for both batch policies):

* the forward itself is :func:`emo_assets.lib.model.masked_forward.encode` (per-waveform normalisation,
  padding masks that nothing leaks through, channels-last convs, fused attention);
* every recording, utterance scores and frames alike, is cut into windows here and only here (rule in
  :mod:`emo_assets.lib.model.windows`), read window by window from its :class:`AudioReader`, so memory
  is bounded and time grows linearly with length; a recording's result is the duration-weighted mean;
* windows are read in a background thread a few batches ahead of the forwards;
* on CPU one single-threaded forward runs per core (windows are independent), which measured faster
  than one forward spread over all cores; on GPUs windows are packed into masked padded batches;
* ``precision="int8"`` quantises the linear layers and the conv front end dynamically (CPU only);
  ``half`` runs float16 (CUDA only; :class:`ModelSettings` refuses it on the CPU).

Torch's thread count is set for each call and restored after it. No dagster import.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import functools
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from emo_assets.lib.model.int8 import Int8Network, quantise
from emo_assets.lib.model.masked_forward import encode
from emo_assets.lib.model.scorer import ArrayReader, AudioReader, AudioReadError, EmotionResult, Frames, Segment
from emo_assets.lib.model.settings import ModelSettings, torch_threads
from emo_assets.lib.model.windows import (
    WindowPlan,
    frame_keep_ranges,
    min_samples,
    num_frames,
    pack_batches,
    plan_windows,
    too_short,
    weighted_mean,
)
from emo_assets.lib.schemas import EMOTION_LABELS, SAMPLE_RATE


def inference_dtype(device: str, half: bool) -> torch.dtype:
    """float16 for ``half`` (settings allow it on CUDA only), float32 otherwise."""
    return torch.float16 if half else torch.float32


def check_int8(device: torch.device | str, dtype: torch.dtype) -> None:
    """int8 is dynamic quantisation for the CPU in float32: anything else is a ValueError."""
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        raise ValueError(
            "precision='int8' is dynamic quantisation for CPU in float32; "
            "use device='cpu' without half, or precision='fp32' on GPUs"
        )


def prepare_module(module: nn.Module, *, device: torch.device | str, dtype: torch.dtype, precision: str) -> nn.Module:
    """Return the module ready to run: eval mode, on ``device`` in ``dtype``, optionally int8.

    The caller's module is reused when it already matches; otherwise a copy is made, so the input
    module is never changed.
    """
    device = torch.device(device)
    if precision == "int8":
        check_int8(device, dtype)
        return quantise(module).module
    if precision != "fp32":
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    param = next(module.parameters())
    if param.device == device and param.dtype == dtype and not module.training:
        return module
    return copy.deepcopy(module).to(device=device, dtype=dtype).eval()


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


class EmotionModel:
    """emotion2vec+ loaded and ready: scores recordings window by window with funasr's numbers.

    ``module`` is funasr's ``Emotion2vec`` (``AutoModel(...).model``, or built by
    :func:`emo_assets.lib.model.loading.load_model`); ``settings`` are resolved here once.
    ``token_index`` lists the model-vocabulary indices to score, in output order (the loader passes
    the indices of ``EMOTION_LABELS``); the softmax runs over those tokens only (funasr masks its
    ``unuse*`` tokens to -inf the same way). The caller's module is never changed: casting or
    quantising works on a copy. int8 (CPU only): dynamic int8 for every linear layer but the
    classification head and for the conv front end after its first layer; measured on the large
    architecture: embedding cosine >= 0.9996 and scores within 0.003 of fp32 (BENCHMARKS.md).
    ``int8``: that network already made (:mod:`emo_assets.lib.model.int8`, e.g. read from its cache);
    ``module`` is then the int8 network's own module.
    """

    labels = EMOTION_LABELS

    def __init__(
        self,
        module: nn.Module,
        settings: ModelSettings | None = None,
        *,
        token_index: Sequence[int] | None = None,
        model_id: str = "",
        is_random: bool = False,
        int8: Int8Network | None = None,
    ) -> None:
        self.settings = (settings or ModelSettings()).resolved()
        self.model_id = model_id
        self.is_random = is_random
        self.device = self.settings.device
        self.dtype = inference_dtype(self.device, self.settings.half)
        enc = module.modality_encoders["AUDIO"]
        if self.settings.batch_policy == "masked" and enc.modality_cfg.extractor_mode != "layer_norm":
            raise ValueError(
                "batch_policy='masked' needs extractor_mode='layer_norm' (group norm over time "
                "would mix padding into valid frames); use batch_policy='per_clip'"
            )
        if module.proj is None:
            raise ValueError("the model has no classification head (vocab_size <= 0); emotion2vec+ has one")
        n_tokens = module.proj.out_features
        self.token_index = list(range(n_tokens)) if token_index is None else list(token_index)
        if not self.token_index or not all(0 <= t < n_tokens for t in self.token_index):
            raise ValueError(f"token_index must hold indices in [0, {n_tokens}), got {token_index}")
        precision = self.settings.precision
        if int8 is not None and precision != "int8":
            raise ValueError(f"an int8 network was given for precision={precision!r}; pass the float module")
        if precision == "int8":
            check_int8(self.device, self.dtype)
            int8 = int8 or quantise(module)
            self.module, self.conv_gemms = int8.module, int8.conv_gemms
        else:
            self.module = prepare_module(module, device=self.device, dtype=self.dtype, precision=precision)
            self.conv_gemms = None
        self.conv_spec = tuple(tuple(layer) for layer in enc.feature_enc_layers)
        self.frame_hop = int(np.prod([stride for _, _, stride in self.conv_spec]))
        self.min_samples = min_samples(self.conv_spec)
        self.embed_dim = int(module.cfg.get("embed_dim"))
        self.threads = self.settings.threads
        cpu_per_clip = self.device == "cpu" and self.settings.batch_policy == "per_clip"
        self.workers = self.threads if cpu_per_clip else 1

    def __repr__(self) -> str:
        s = self.settings
        return f"EmotionModel({self.model_id!r}, device={s.device!r}, dtype={self.dtype}, precision={s.precision!r})"

    # ------------------------------------------------------------ public API (EmotionScorer)

    def score(self, recordings: Sequence[AudioReader]) -> list[EmotionResult]:
        """Embedding, scores and windows per recording, read and scored window by window.

        A recording up to ``window_s`` long gives funasr's utterance-mode numbers; a longer one is
        the duration-weighted mean over its windows (``segments``).
        """
        recordings = list(recordings)
        plans = [WindowPlan(i, s, e) for i, r in enumerate(recordings) for s, e in self._windows(r, i)]
        pooled = self._run(recordings, plans, keep_frames=False)
        by_recording: list[list[Segment]] = [[] for _ in recordings]
        for plan, (embedding, scores) in zip(plans, pooled, strict=True):
            by_recording[plan.index].append(
                Segment(plan.start / SAMPLE_RATE, plan.end / SAMPLE_RATE, embedding, scores)
            )
        results = []
        for segments in by_recording:
            weights = [s.end_s - s.start_s for s in segments]
            results.append(
                EmotionResult(
                    embedding=weighted_mean([s.embedding for s in segments], weights),
                    scores=weighted_mean([s.scores for s in segments], weights),
                    segments=tuple(segments),
                )
            )
        release_freed_memory()
        return results

    def frames(self, recording: AudioReader) -> Iterator[Frames]:
        """Per-frame features and scores at 50 frames per second, a few windows at a time.

        Features are funasr's ``granularity="frame"`` output. funasr gives no frame-level scores; the
        same classification head (proj + softmax) runs on each frame. Neighbouring windows keep their
        frames up to the middle of their overlap, so no frame comes twice.
        """
        spans = self._windows(recording, 0)
        counts = [num_frames(end - start, self.conv_spec) for start, end in spans]
        keep = frame_keep_ranges(spans, counts, self.frame_hop)
        step = self.workers
        for first in range(0, len(spans), step):
            group = range(first, min(len(spans), first + step))
            feats = self._run([recording], [WindowPlan(0, *spans[k]) for k in group], keep_frames=True)
            for k, f in zip(group, feats, strict=True):
                lo, hi = keep[k]
                x = np.ascontiguousarray(f[lo:hi])
                times = (spans[k][0] + np.arange(lo, hi) * self.frame_hop) / SAMPLE_RATE
                with torch_threads(self.threads), torch.inference_mode():
                    logits = self.module.proj(torch.from_numpy(x).to(self.device, self._head_dtype()))
                    scores = self._softmax(logits)
                yield Frames(times, x, scores)
        release_freed_memory()

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[EmotionResult]:
        """:meth:`score` of float32 mono 16 kHz waveforms in memory."""
        return self.score([ArrayReader(w, i) for i, w in enumerate(waveforms)])

    def infer_frames(self, waveform: np.ndarray) -> Frames:
        """All :meth:`frames` of a float32 mono 16 kHz waveform in memory."""
        return Frames.concat(list(self.frames(ArrayReader(waveform))))

    # ------------------------------------------------------------ internals

    def _windows(self, recording: AudioReader, index: int) -> list[tuple[int, int]]:
        n = recording.num_samples
        reason = too_short(n, self.min_samples)
        if reason is not None:
            raise ValueError(f"waveform {index} is {reason}")
        return plan_windows(n, window_s=self.settings.window_s, overlap_s=self.settings.window_overlap_s)

    def _read(self, recordings: Sequence[AudioReader], plan: WindowPlan) -> np.ndarray:
        try:
            wave = np.asarray(recordings[plan.index].read(plan.start, plan.n_samples), dtype=np.float32)
            if wave.shape != (plan.n_samples,):
                raise ValueError(
                    f"read {wave.shape} samples at {plan.start}, expected ({plan.n_samples},): "
                    "the audio changed while it was read"
                )
        except (ValueError, OSError) as exc:
            raise AudioReadError(plan.index, exc) from exc
        if not np.isfinite(wave).all():
            raise ValueError(f"waveform {plan.index} contains NaN or infinite samples")
        return wave

    def _head_dtype(self) -> torch.dtype:
        return self.module.proj.weight.dtype

    def _softmax(self, logits: torch.Tensor) -> np.ndarray:
        selected = logits.float()[..., self.token_index]
        return torch.softmax(selected, dim=-1).cpu().numpy()

    def _batches(self, plans: Sequence[WindowPlan]) -> list[list[int]]:
        if self.settings.batch_policy == "per_clip":
            return [[i] for i in sorted(range(len(plans)), key=lambda i: -plans[i].n_samples)]
        return pack_batches([p.n_samples for p in plans], int(self.settings.max_batch_s * SAMPLE_RATE))

    def _run(self, recordings: Sequence[AudioReader], plans: Sequence[WindowPlan], *, keep_frames: bool) -> list:
        """Read and forward every window; per window either pooled ``(embedding, scores)`` or frames.

        Batches run on ``workers`` Python threads (torch releases the GIL), longest first, each with
        ``threads // workers`` intra-op threads. A reader thread keeps ``workers + 1`` batches read
        ahead of the forwards, so the model never waits on I/O and memory holds a few windows.
        """
        batches = self._batches(plans)
        results: list = [None] * len(plans)

        def read(batch: list[int]) -> list[np.ndarray]:
            return [self._read(recordings, plans[i]) for i in batch]

        def work(batch: list[int], waves: list[np.ndarray]) -> tuple[list[int], list]:
            with torch.inference_mode():  # thread-local, so entered in every worker
                return batch, self._forward(waves, keep_frames)

        def store(done: Future) -> None:
            batch, rows = done.result()
            for i, row in zip(batch, rows, strict=True):
                results[i] = row

        workers = max(1, min(self.workers, len(batches)))
        ahead = workers + 1
        with (
            torch_threads(max(1, self.threads // workers)),
            ThreadPoolExecutor(1, thread_name_prefix="emo-read") as io,
            ThreadPoolExecutor(workers, thread_name_prefix="emo-infer") as pool,
        ):
            reads = deque(io.submit(read, batch) for batch in batches[:ahead])
            running: deque[Future] = deque()
            for k, batch in enumerate(batches):
                waves = reads.popleft().result()
                if k + ahead < len(batches):
                    reads.append(io.submit(read, batches[k + ahead]))
                running.append(pool.submit(work, batch, waves))
                if len(running) >= workers:
                    store(running.popleft())
            while running:
                store(running.popleft())
        return results

    def _forward(self, waves: list[np.ndarray], keep_frames: bool) -> list:
        wave = torch.zeros(len(waves), max(len(w) for w in waves))
        for row, w in enumerate(waves):
            wave[row, : len(w)] = torch.from_numpy(w)
        lengths = torch.tensor([len(w) for w in waves])
        x, frame_lengths = encode(self.module, wave.to(self.device), lengths.to(self.device), self.conv_gemms)
        if keep_frames:
            return [x[row, :n].float().cpu().numpy() for row, n in enumerate(frame_lengths.tolist())]
        keep = torch.arange(x.shape[1], device=x.device) < frame_lengths.unsqueeze(1)
        mean = (x.float() * keep.unsqueeze(-1)).sum(1) / frame_lengths.unsqueeze(1)
        scores = self._softmax(self.module.proj(mean.to(self._head_dtype())))
        mean = mean.cpu().numpy()
        return [(mean[row], scores[row]) for row in range(len(waves))]
