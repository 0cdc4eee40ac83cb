"""Untrusted recordings (the web page's uploads): a duration cap enforced while decoding, and no
emotion for a recording without speech.

A compressed file says nothing reliable about its decoded size: 363 KB of FLAC holds two hours of
digital silence, and a header may lie about its length. :func:`load_mono_16k_capped` therefore
counts the 16 kHz samples as :func:`~emo_assets.lib.audio.load.stream_mono_16k` produces them, block
by block, and stops decoding (closing the file) at the first block past the cap: memory and time
are bounded by the cap, not by the file.

:func:`no_speech_reason` asks the voice-activity model the pipeline cuts speech turns with
(:func:`~emo_assets.lib.audio.turns.holds_speech`, silero-vad): noise, hum, a tone or music at any
level holds no speech turn and gets no emotion. Digital silence (every 16-bit sample zero) is
answered before the model runs: it holds nothing for the model to hear. No dagster here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from emo_assets.lib.audio.load import as_stored, stream_mono_16k
from emo_assets.lib.audio.turns import SamplesReader, SileroVad, holds_speech
from emo_assets.lib.schemas import NO_SPEECH, SAMPLE_RATE


class RecordingTooLongError(ValueError):
    """A recording longer than the cap; decoding stopped at the cap."""


def load_mono_16k_capped(path: str | os.PathLike, max_s: float) -> np.ndarray:
    """:func:`~emo_assets.lib.audio.load.load_mono_16k` of at most ``max_s`` seconds.

    Raises RecordingTooLongError as soon as the decoded audio passes ``max_s`` (having decoded at
    most one block more), AudioDecodeError for bad bytes, OSError when the file cannot be read.
    """
    if not max_s > 0:
        raise ValueError(f"max_s must be a positive number of seconds, got {max_s!r}")
    cap = int(max_s * SAMPLE_RATE)
    blocks, produced = [], 0
    with contextlib.closing(stream_mono_16k(path)) as stream:  # closing stops the decoder and the file
        for block in stream:
            produced += block.size
            if produced > cap:
                raise RecordingTooLongError(
                    f"{Path(path).name}: longer than the {max_s:g} s allowed "
                    f"(decoding stopped at {produced / SAMPLE_RATE:.1f} s); send a shorter recording"
                )
            blocks.append(block)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def no_speech_reason(samples: np.ndarray, vad: SileroVad | None = None) -> str | None:
    """Why ``samples`` (16 kHz mono) hold no speech to give an emotion to, or None when they do.

    The voice-activity model's rule (:func:`~emo_assets.lib.audio.turns.holds_speech`) on the
    samples as a 16-bit file stores them; digital silence is refused without running the model.
    """
    stored = as_stored(samples)
    if not np.any(stored):
        return "no speech: the recording is digital silence (every sample is zero), so no emotion is given"
    if not holds_speech(SamplesReader(stored), vad):
        return f"{NO_SPEECH}, so no emotion is given"
    return None
