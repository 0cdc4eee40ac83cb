"""Speech turns: where in a 16 kHz recording someone speaks, found by silero-vad.

silero-vad ships its model inside its PyPI package (``silero_vad/data/silero_vad.jit``, run by
torch), so nothing is downloaded at run time. :func:`find_turns` reads the recording block by block
through any reader with ``num_samples`` and ``read(offset, n)`` (the lake's FLAC reader, or samples
in memory), asks the model for the speech probability of every 32 ms frame, and turns the
probabilities into turns with silero-vad's own rule (``get_speech_timestamps_from_probs``): speech
starts where the probability rises past ``threshold`` and a turn ends at a pause of at least
``min_silence_s``; turns shorter than ``min_speech_s`` are dropped. Memory holds one block of audio
and one float per frame, whatever the length.

A turn keeps its short pauses (a breath, a comma); its ``speech_share`` is the share of its frames
the model heard as speech. An empty list means the recording holds no speech: :func:`holds_speech`
is that rule, the one the pipeline's turns, ``emo analyze --segments turns`` and the web page's
refusal of a recording without speech share.

No dagster import; torch is imported when a model is loaded.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from emo_assets.lib.schemas import SAMPLE_RATE

# silero-vad's frame at 16 kHz: 512 samples (32 ms), one probability each.
FRAME_SAMPLES = 512
# A pause shorter than this stays inside the turn (a breath, a comma); a longer one ends it.
MIN_SILENCE_S = 0.5
# Speech shorter than this is not a turn (a click, a cough).
MIN_SPEECH_S = 0.25
# Speech probability above which a frame is speech (silero-vad's default).
THRESHOLD = 0.5
# Padding kept at each side of a turn, so its first and last syllables are whole.
PAD_S = 0.05
# Frames read per block: ~10 s of audio.
_BLOCK_FRAMES = 312


class Reader(Protocol):
    @property
    def num_samples(self) -> int: ...

    def read(self, offset: int, n: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Turn:
    """One speech turn: samples ``[start, end)`` of the recording and the share of it that is speech."""

    start: int
    end: int
    speech_share: float

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


class SileroVad:
    """silero-vad's packaged model, one stateful copy per thread (its state runs across frames).

    Importing ``silero_vad`` sets torch's process-wide thread count to 1; the count is restored,
    and each call runs with one thread (the model is small; more threads only cost).
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _model(self):
        model = getattr(self._local, "model", None)
        if model is None:
            model = self._local.model = _load_silero()
        return model

    def speech_probabilities(self, reader: Reader) -> np.ndarray:
        """One speech probability per 512-sample frame of ``reader`` (the last frame zero-padded)."""
        import torch

        model = self._model()
        model.reset_states()
        n = reader.num_samples
        probs = np.zeros(-(-n // FRAME_SAMPLES), dtype=np.float32)
        block = FRAME_SAMPLES * _BLOCK_FRAMES
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                for offset in range(0, n, block):
                    samples = np.asarray(reader.read(offset, min(block, n - offset)), dtype=np.float32)
                    frames = -(-len(samples) // FRAME_SAMPLES)
                    padded = np.zeros(frames * FRAME_SAMPLES, dtype=np.float32)
                    padded[: len(samples)] = samples
                    chunk = torch.from_numpy(padded).reshape(frames, FRAME_SAMPLES)
                    first = offset // FRAME_SAMPLES
                    for k in range(frames):
                        probs[first + k] = model(chunk[k], SAMPLE_RATE).item()
        finally:
            torch.set_num_threads(threads)
        return probs


@functools.cache
def _silero_package():
    import torch

    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    return silero_vad


def _load_silero():
    return _silero_package().load_silero_vad(onnx=False)


def turns_from_probabilities(
    probs: np.ndarray,
    num_samples: int,
    *,
    threshold: float = THRESHOLD,
    min_silence_s: float = MIN_SILENCE_S,
    min_speech_s: float = MIN_SPEECH_S,
    pad_s: float = PAD_S,
) -> list[Turn]:
    """Turns from per-frame speech probabilities, by silero-vad's rule (pure: no model)."""
    stamps = _silero_package().get_speech_timestamps_from_probs(
        [float(p) for p in probs],
        sampling_rate=SAMPLE_RATE,
        threshold=threshold,
        min_speech_duration_ms=int(round(min_speech_s * 1000)),
        min_silence_duration_ms=int(round(min_silence_s * 1000)),
        speech_pad_ms=int(round(pad_s * 1000)),
        audio_length_samples=num_samples,
    )
    speech = np.asarray(probs) >= threshold
    turns = []
    for stamp in stamps:
        start, end = int(stamp["start"]), min(int(stamp["end"]), num_samples)
        if end <= start:
            continue
        frames = speech[start // FRAME_SAMPLES : -(-end // FRAME_SAMPLES)]
        share = float(frames.mean()) if frames.size else 0.0
        turns.append(Turn(start, end, share))
    return turns


def find_turns(reader: Reader, vad: SileroVad | None = None, **rule) -> list[Turn]:
    """The speech turns of a 16 kHz mono recording, in time order; ``[]`` when it holds no speech.

    ``rule`` overrides :func:`turns_from_probabilities`' keywords (threshold, min_silence_s, ...).
    """
    vad = vad or default_vad()
    probs = vad.speech_probabilities(reader)
    return turns_from_probabilities(probs, reader.num_samples, **rule)


def holds_speech(reader: Reader, vad: SileroVad | None = None) -> bool:
    """Whether the voice-activity model hears at least one speech turn in the recording."""
    return bool(find_turns(reader, vad))


class SamplesReader:
    """16 kHz mono samples in memory as a :class:`Reader`."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def read(self, offset: int, n: int) -> np.ndarray:
        return self.samples[offset : offset + n]


@functools.cache
def default_vad() -> SileroVad:
    """The process's VAD (the model is loaded per thread on first use)."""
    return SileroVad()


TurnFinder = Callable[[Reader], list[Turn]]
