"""Untrusted recordings (the web page's uploads): a duration cap enforced while decoding, and no
emotion for a recording without speech.

A compressed file says nothing reliable about its decoded size: 363 KB of FLAC holds two hours of
digital silence, and a header may lie about its length. :func:`load_mono_16k_capped` therefore
counts the 16 kHz samples as :func:`~emo_assets.lib.audio.load.stream_mono_16k` produces them, block
by block, and stops decoding (closing the file) at the first block past the cap: memory and time
are bounded by the cap, not by the file.

:func:`no_speech_reason` is an energy test: a recording whose RMS level is below
:data:`~emo_assets.lib.audio.load.SILENT_BELOW_DBFS` (digital silence, a line with no one on it)
gets no emotion. No dagster here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from emo_assets.lib.audio.load import SILENT_BELOW_DBFS, rms_dbfs, stream_mono_16k
from emo_assets.lib.schemas import SAMPLE_RATE


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


def no_speech_reason(samples: np.ndarray, threshold_dbfs: float = SILENT_BELOW_DBFS) -> str | None:
    """Why ``samples`` (16 kHz mono) hold no speech to give an emotion to, or None when they may.

    An energy test: the RMS level below ``threshold_dbfs``. It catches digital silence and an empty
    line, not a recording of noise or music.
    """
    level = rms_dbfs(samples)
    if level < threshold_dbfs:
        return (
            f"no speech: the recording is silent (RMS level {level:.1f} dBFS, below {threshold_dbfs:g} dBFS), "
            "so no emotion is given"
        )
    return None
