"""Cutting long recordings into model windows, and packing windows into batches.

Pure numpy; no torch, no dagster. Used by :mod:`emo_assets.lib.model.engine`, the one place that
windows recordings (utterance scores and frames alike).

Window rule (the README quotes this paragraph)
----------------------------------------------
A recording of ``L`` samples is scored in one piece when ``L <= window_s``.
Longer recordings are cut into ``n = ceil((L - overlap_s) / (window_s - overlap_s))``
windows of equal length ``w = ceil((L + (n - 1) * overlap_s) / n) <= window_s``,
spaced evenly so the first starts at 0 and the last ends exactly at ``L``; neighbours
overlap by at least ``overlap_s`` (default 1 s), and no window is a short leftover
(every window is longer than ``window_s / 2``). Each window is scored independently,
exactly as a clip of that length would be. The recording's utterance embedding and its
scores are the duration-weighted mean over windows (weight = window length in seconds;
the scores stay a probability distribution). Frame-level output of a long recording
concatenates the windows' frames, each window keeping its frames up to the middle of each
overlap, so the 50 Hz frame track has no duplicates (steps at window joins are 10-30 ms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emo_assets.lib.schemas import SAMPLE_RATE


@dataclass(frozen=True)
class WindowPlan:
    """One window of one recording, in samples: ``wave[start:end]`` of recording ``index``."""

    index: int
    start: int
    end: int

    @property
    def n_samples(self) -> int:
        return self.end - self.start


def min_samples(conv_layers: Sequence[tuple[int, int, int]]) -> int:
    """Fewest input samples for which the conv feature extractor yields one frame.

    ``conv_layers`` is the feature_encoder_spec: (channels, kernel, stride) per layer.
    """
    needed = 1
    for _, kernel, stride in reversed(list(conv_layers)):
        needed = (needed - 1) * stride + kernel
    return needed


def num_frames(num_samples: int, conv_layers: Sequence[tuple[int, int, int]]) -> int:
    """Frames the conv feature extractor yields for ``num_samples`` samples (0 if too short)."""
    length = num_samples
    for _, kernel, stride in conv_layers:
        length = (length - kernel) // stride + 1
        if length <= 0:
            return 0
    return length


def too_short(num_samples: int, minimum: int) -> str | None:
    """Why a recording of ``num_samples`` is too short for a model needing ``minimum``, or None."""
    if num_samples >= minimum:
        return None
    return (
        f"too short: {num_samples} samples ({_ms(num_samples):.1f} ms); the emotion model needs at least "
        f"{minimum} samples ({_ms(minimum):.1f} ms at {SAMPLE_RATE // 1000} kHz)"
    )


def _ms(num_samples: int) -> float:
    return 1000 * num_samples / SAMPLE_RATE


def plan_windows(n_samples: int, *, window_s: float, overlap_s: float) -> list[tuple[int, int]]:
    """Return ``(start, end)`` sample spans covering ``[0, n_samples)`` by the window rule."""
    window = int(round(window_s * SAMPLE_RATE))
    overlap = int(round(overlap_s * SAMPLE_RATE))
    if window <= 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    if not 0 <= overlap < window // 2:
        raise ValueError(f"window_overlap_s={overlap_s} must be >= 0 and below half of window_s={window_s}")
    if n_samples <= window:
        return [(0, n_samples)]
    n = math.ceil((n_samples - overlap) / (window - overlap))
    length = math.ceil((n_samples + (n - 1) * overlap) / n)
    starts = [round(k * (n_samples - length) / (n - 1)) for k in range(n)]
    return [(s, s + length) for s in starts]


def frame_keep_ranges(
    spans: Sequence[tuple[int, int]], n_frames: Sequence[int], frame_hop: int
) -> list[tuple[int, int]]:
    """For each window, the ``[first, last)`` frame indices it contributes to a stitched frame track.

    Frame ``t`` of a window starting at sample ``s`` starts at sample ``s + t * frame_hop``. A window
    keeps its frames up to the midpoint of its overlap with the next window; the next window resumes
    with its first frame more than half a hop after the last kept one, so consecutive stitched frames
    are between 0.5 and 1.5 hops apart (exactly one hop inside a window).
    """
    keep: list[tuple[int, int]] = []
    previous = None  # start sample of the last kept frame so far
    for i, ((start, end), count) in enumerate(zip(spans, n_frames, strict=True)):
        last = count
        if i < len(spans) - 1:
            midpoint = (spans[i + 1][0] + end) // 2
            last = min(count, math.ceil((midpoint - start) / frame_hop))
        first = 0
        if previous is not None:
            first = min(count, max(0, (previous + frame_hop // 2 - start) // frame_hop + 1))
        keep.append((first, max(first, last)))
        if last > first:
            previous = start + (last - 1) * frame_hop
    return keep


def weighted_mean(values: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of equally shaped float32 arrays (a single array is returned unchanged)."""
    if len(values) == 1:
        return values[0]
    w = np.asarray(weights, dtype=np.float64)
    stacked = np.stack(values).astype(np.float64)
    return (np.tensordot(w, stacked, axes=1) / w.sum()).astype(np.float32)


def pack_batches(lengths: Sequence[int], max_batch_samples: int) -> list[list[int]]:
    """Group item indices into batches, longest first, each padded batch under the sample budget.

    A batch of ``k`` items padded to its longest member holds ``k * longest`` samples; items are
    sorted by length (descending) so padding stays small. An item longer than the budget gets a
    batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_batch_samples:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches
