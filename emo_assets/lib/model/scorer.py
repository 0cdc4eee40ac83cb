"""What assets and commands talk to: the scorer Protocol, its result types, and audio readers.

A recording reaches the model as an :class:`AudioReader`: its length in samples and
``read(offset, n)`` returning ``n`` float32 mono samples at :data:`~emo_assets.lib.schemas.SAMPLE_RATE`
from ``offset``. The model reads one window at a time, so memory stays bounded whatever the length.
Callers build readers: ``lib/audio`` has one over a 16 kHz FLAC, :class:`ArrayReader` wraps samples
already in memory. The model knows nothing of files or formats.

Pure numpy; no torch here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from emo_assets.lib.schemas import EMOTION_LABELS

if TYPE_CHECKING:
    from emo_assets.lib.model.settings import ModelSettings


class AudioReader(Protocol):
    """16 kHz mono audio, read by position. ``read`` raises ValueError (bad audio) or OSError."""

    @property
    def num_samples(self) -> int: ...

    def read(self, offset: int, n: int) -> np.ndarray: ...


class AudioReadError(ValueError):
    """A reader failed for one recording; ``index`` is its position in the call, the cause is chained."""

    def __init__(self, index: int, cause: BaseException) -> None:
        self.index = index
        self.reason = str(getattr(cause, "reason", cause))
        super().__init__(f"recording {index}: audio unreadable: {cause}")


class ArrayReader:
    """A waveform already in memory (float, mono, 16 kHz) as an :class:`AudioReader`."""

    def __init__(self, samples: np.ndarray, index: int = 0) -> None:
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise ValueError(
                f"waveform {index} has shape {samples.shape}; the emotion model takes mono 16 kHz "
                "audio as a 1-D array (downmix and resample it first)"
            )
        if not np.issubdtype(samples.dtype, np.floating):
            raise ValueError(f"waveform {index} has dtype {samples.dtype}; expected float samples in [-1, 1]")
        self.samples = np.ascontiguousarray(samples, dtype=np.float32)

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def read(self, offset: int, n: int) -> np.ndarray:
        return self.samples[offset : offset + n]


class SpanReader:
    """Samples ``[start, end)`` of another reader, as a recording of its own (a speech turn scored as a
    clip of that length). Reads go to the underlying reader; nothing is copied ahead."""

    def __init__(self, reader: AudioReader, start: int, end: int) -> None:
        if not 0 <= start < end <= reader.num_samples:
            raise ValueError(f"span [{start}, {end}) is not inside a recording of {reader.num_samples} samples")
        self.reader, self.start, self.end = reader, start, end

    @property
    def num_samples(self) -> int:
        return self.end - self.start

    def read(self, offset: int, n: int) -> np.ndarray:
        if offset < 0 or offset + n > self.num_samples:
            raise ValueError(f"read of samples {offset}-{offset + n} outside a span of {self.num_samples}")
        return self.reader.read(self.start + offset, n)


@dataclass(frozen=True)
class Segment:
    """One scored window of a recording."""

    start_s: float
    end_s: float
    embedding: np.ndarray  # float32[D], mean over the window's frames
    scores: np.ndarray  # float32[9], in EMOTION_LABELS order


@dataclass(frozen=True)
class EmotionResult:
    """One recording: embedding [D] and class scores [9] in ``EMOTION_LABELS`` order, the
    duration-weighted means over its windows (``segments``; one window when it is short)."""

    embedding: np.ndarray
    scores: np.ndarray
    segments: tuple[Segment, ...] = ()

    @property
    def emotion(self) -> str:
        return EMOTION_LABELS[int(np.argmax(self.scores))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.scores))


@dataclass(frozen=True)
class Frames:
    """Per-frame (50 Hz) output, like funasr ``granularity="frame"`` plus per-frame scores."""

    times_s: np.ndarray  # float64[T], start of each frame in the recording
    embeddings: np.ndarray  # float32[T, D]
    scores: np.ndarray  # float32[T, 9], softmax of the classification head on each frame

    @classmethod
    def concat(cls, chunks: Sequence[Frames]) -> Frames:
        return cls(
            *(np.concatenate([getattr(c, name) for c in chunks]) for name in ("times_s", "embeddings", "scores"))
        )


@runtime_checkable
class EmotionScorer(Protocol):
    """The emotion model as every caller sees it, loaded or loaded on first use.

    ``settings`` are resolved (device, threads and batch policy decided on this machine).
    """

    settings: ModelSettings
    model_id: str
    is_random: bool
    embed_dim: int
    min_samples: int

    def score(self, recordings: Sequence[AudioReader]) -> list[EmotionResult]:
        """One result per recording, in order; each read and scored window by window."""
        ...

    def frames(self, recording: AudioReader) -> Iterator[Frames]:
        """The recording's frames, one window's worth at a time, without duplicates at window joins."""
        ...

    def infer(self, waveforms: Sequence[np.ndarray]) -> list[EmotionResult]:
        """:meth:`score` of waveforms in memory."""
        ...

    def infer_frames(self, waveform: np.ndarray) -> Frames:
        """All frames of a waveform in memory."""
        ...
