"""Decode a recording block by block: the streaming twin of :func:`emo_assets.lib.audio.decode.decode_audio`.

Same backends, sniffing and checks as ``decode.py`` (it reuses them), but the samples are yielded as
``(channels, n)`` float32 blocks of at most ~64k frames instead of one array, so memory stays bounded
whatever the length of the file: a 2-hour 44.1 kHz stereo call would be ~2.5 GB as one float32 array.

The checks that need the whole stream run as it goes (NaN/Inf per block) or at its end (no samples,
shorter than the header declares). A consumer must therefore treat the output as provisional until the
generator is exhausted without AudioDecodeError: write to a temporary file, then rename.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from emo_assets.lib.audio.decode import (
    _BLOCK_FRAMES,
    _WAV_BYTES_PER_SAMPLE,
    AudioDecodeError,
    _by_backend,
    _check_declared_length,
    _check_sample_rate,
    _frame_to_array,
    _open_pyav,
    _pyav_declared_s,
    _short,
    _wav_declared_s,
)


class DecodedStream:
    """An open recording: ``sample_rate``, ``channels`` and an iterator of checked blocks."""

    def __init__(self, path: Path, sample_rate: int, channels: int, blocks: Iterator[np.ndarray]):
        self.path = path
        self.sample_rate = sample_rate
        self.channels = channels
        self._blocks = blocks
        self.frames = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self._blocks:
            if block.shape[1] == 0:
                continue
            if not np.isfinite(block).all():
                raise AudioDecodeError("non-finite samples (NaN/Inf)", self.path)
            self.frames += block.shape[1]
            yield block
        if self.frames == 0:
            raise AudioDecodeError("no audio samples", self.path)


def open_stream(path: str | os.PathLike) -> DecodedStream:
    """Open ``path`` for block-wise decoding. Raises AudioDecodeError (bad bytes) or OSError."""
    path = Path(path)
    stream = _by_backend(path, _soundfile_stream, _pyav_stream)
    _check_sample_rate(path, stream.sample_rate)
    return stream


def _soundfile_stream(path: Path) -> DecodedStream | None:
    import soundfile as sf

    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return None
    sample_rate, channels = int(handle.samplerate), int(handle.channels)
    if sample_rate <= 0 or channels <= 0:
        handle.close()
        return None

    def blocks() -> Iterator[np.ndarray]:
        decoded = 0
        with handle:
            declared_frames, major, subtype = handle.frames, handle.format, handle.subtype
            while True:
                try:
                    block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioDecodeError(f"truncated or corrupt stream: {_short(exc)}", path) from None
                if block.shape[0] == 0:
                    break
                decoded += block.shape[0]
                yield np.ascontiguousarray(block.T)
        _check_declared_length(path, declared_frames / sample_rate, decoded / sample_rate)
        if major in ("WAV", "WAVEX") and subtype in _WAV_BYTES_PER_SAMPLE:
            declared_s = _wav_declared_s(path, sample_rate, channels, _WAV_BYTES_PER_SAMPLE[subtype] * channels)
            _check_declared_length(path, declared_s, decoded / sample_rate)

    return DecodedStream(path, sample_rate, channels, blocks())


def _pyav_stream(path: Path) -> DecodedStream:
    import av

    container = _open_pyav(path)
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    sample_rate, channels = int(ctx.sample_rate), int(ctx.channels)
    try:
        declared_s = _pyav_declared_s(path, container, stream)
    except Exception:
        container.close()
        raise
    limit = max(1, round(declared_s * sample_rate)) if declared_s is not None and declared_s > 0 else None

    def blocks() -> Iterator[np.ndarray]:
        decoded = 0
        with container:
            try:
                for frame in container.decode(stream):
                    if frame.samples == 0:
                        continue
                    array = _frame_to_array(frame)
                    if (frame.sample_rate, array.shape[0]) != (sample_rate, channels):
                        raise AudioDecodeError("sample rate or channel count changes mid-stream", path)
                    if limit is not None:  # the container's exact duration trims encoder padding
                        array = array[:, : max(0, limit - decoded)]
                    decoded += frame.samples
                    yield np.ascontiguousarray(array)
            except av.FFmpegError as exc:
                if decoded == 0:
                    raise AudioDecodeError(f"undecodable {ctx.name} stream: {_short(exc)}", path) from None
                at = decoded / sample_rate
                raise AudioDecodeError(f"truncated or corrupt stream at {at:.2f} s: {_short(exc)}", path) from None
        _check_declared_length(path, declared_s, decoded / sample_rate)

    return DecodedStream(path, sample_rate, channels, blocks())
