"""Decode audio files of any common format into float32 arrays.

Two backends, chosen by what the file's first bytes say, never by its extension:

* **soundfile** (libsndfile) for the containers it reads natively: WAV (8-bit unsigned, mu-law, A-law,
  16/24/32-bit int, float32/64), FLAC, Ogg Vorbis/Opus, AIFF, AU, W64, RF64, CAF. Exact and fast.
* **PyAV** (the ffmpeg libraries bundled in the ``av`` wheel) for everything else: MP3, M4A/AAC, and any
  file libsndfile refuses to open. MP3 goes to PyAV on purpose: libsndfile's mpg123 prints warnings to
  stderr and misreports corrupt input as "file does not exist".

So a WAV file named ``.mp3`` decodes as the WAV it is, and a PNG named ``.mp3`` is refused with
"not an audio file: no decodable audio stream". Bad input bytes only ever raise :class:`AudioDecodeError`;
a missing or unreadable path raises the usual ``OSError`` (that is a pipeline problem, not a bad file).

``AudioInfo.format`` convention: lossless files are named by their container (``wav``, ``flac``,
``aiff``, ``au``, ``w64``, ``rf64``, ``caf``), lossy streams by their codec (``mp3``, ``aac`` for
M4A/MP4 and ADTS, ``opus``, ``vorbis``). Anything else is ffmpeg's lower-case codec name (``alac``,
``amr_nb``...). The file extension plays no part.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

# Containers whose magic bytes send a file to soundfile first (offset 0, plus b"WAVE" check for RIFF).
_SOUNDFILE_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"FORM", b"fLaC", b"OggS", b".snd", b"riff", b"caff")
_SOUNDFILE_FORMAT_NAMES = {
    "WAV": "wav",
    "WAVEX": "wav",
    "AIFF": "aiff",
    "AU": "au",
    "W64": "w64",
    "RF64": "rf64",
    "CAF": "caf",
    "FLAC": "flac",
    "MP3": "mp3",
}
_FFMPEG_CODEC_NAMES = {
    "mp3float": "mp3",
    "mp3": "mp3",
    "aac": "aac",
    "aac_fixed": "aac",
    "libopus": "opus",
    "opus": "opus",
    "vorbis": "vorbis",
    "libvorbis": "vorbis",
    "flac": "flac",
}
# Containers that store an exact duration, so "decoded less than declared" means the file was cut short.
# (Ogg durations come from the last page; an MP3 duration is trusted only with a Xing/Info/VBRI header.)
_EXACT_DURATION_CONTAINERS = ("mov", "mp4", "m4a", "flac", "matroska", "webm")
_BLOCK_FRAMES = 1 << 16
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 2000, 768000
# A file is called truncated when it holds less than its header declares by more than this.
_TRUNCATION_TOLERANCE_S = 0.05
_TRUNCATION_TOLERANCE_FRACTION = 0.01

_T = TypeVar("_T")


class AudioDecodeError(ValueError):
    """The file's bytes are not decodable audio. ``reason`` is short and human-readable."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{reason} (file kept out of the pipeline; re-export or re-upload it)")

    def __reduce__(self):  # survive a trip through a process pool with reason and path intact
        return (type(self), (self.reason, self.path))


@dataclass(frozen=True)
class AudioInfo:
    """What a file's headers say. ``format`` follows the convention in this module's docstring."""

    format: str
    sample_rate: int
    channels: int
    duration_s: float


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Read a file's headers (no full decode) and say what it is. Raises AudioDecodeError."""
    path = Path(path)
    info = _by_backend(path, _probe_soundfile, _probe_pyav)
    _check_sample_rate(path, info.sample_rate)
    return info


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 ``(channels, samples)`` at its native sample rate.

    The result is never empty and every sample is finite; otherwise AudioDecodeError.
    """
    path = Path(path)
    samples, sample_rate = _by_backend(path, _decode_soundfile, _decode_pyav)
    _check_sample_rate(path, sample_rate)
    if samples.shape[1] == 0:
        raise AudioDecodeError("no audio samples", path)
    if not np.isfinite(samples).all():
        raise AudioDecodeError("non-finite samples (NaN/Inf)", path)
    return samples, sample_rate


# --- sniffing ---------------------------------------------------------------------------------------


def _by_backend(path: Path, with_soundfile: Callable[[Path], _T | None], with_pyav: Callable[[Path], _T]) -> _T:
    """The backend choice of this module's docstring: ``with_soundfile(path)`` when the file's first bytes
    name a container libsndfile reads and it accepts the file (returns not None), else ``with_pyav(path)``."""
    result = with_soundfile(path) if _prefers_soundfile(_read_head(path)) else None
    return with_pyav(path) if result is None else result


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:  # OSError (missing, permission) propagates on purpose
        head = f.read(16)
    if not head:
        raise AudioDecodeError("empty file (0 bytes)", path)
    return head


def _prefers_soundfile(head: bytes) -> bool:
    if head[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return head[8:12] == b"WAVE"
    return head[:4] in _SOUNDFILE_MAGIC


def _check_sample_rate(path: Path, sample_rate: int) -> None:
    # A corrupt header's 1 Hz would make the 16 kHz resample 16000 times longer than the file.
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"implausible sample rate: {sample_rate} Hz (expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)", path
        )


def _check_declared_length(path: Path, declared_s: float | None, decoded_s: float) -> None:
    if declared_s is None or not np.isfinite(declared_s) or declared_s <= 0:
        return
    tolerance = max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * declared_s)
    if decoded_s < declared_s - tolerance:
        raise AudioDecodeError(
            f"truncated stream: header declares {declared_s:.2f} s, file holds {decoded_s:.2f} s", path
        )


def _wav_declared_s(path: Path, sample_rate: int, channels: int, bytes_per_frame: float) -> float | None:
    """Duration the RIFF ``data`` chunk declares, or None when unknown (streamed WAV, RF64, no data)."""
    with open(path, "rb") as f:
        header = f.read(12)
        if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        while chunk := f.read(8):
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                if size in (0, 0xFFFFFFFF) or bytes_per_frame <= 0:
                    return None
                return size / bytes_per_frame / sample_rate
            f.seek(size + (size & 1), os.SEEK_CUR)
    return None


_WAV_BYTES_PER_SAMPLE = {
    "PCM_U8": 1,
    "PCM_S8": 1,
    "ULAW": 1,
    "ALAW": 1,
    "PCM_16": 2,
    "PCM_24": 3,
    "PCM_32": 4,
    "FLOAT": 4,
    "DOUBLE": 8,
}


# --- soundfile backend -------------------------------------------------------------------------------


def _soundfile_format_name(major: str, subtype: str) -> str:
    if major == "OGG":
        return subtype.lower()  # vorbis, opus, flac
    return _SOUNDFILE_FORMAT_NAMES.get(major, major.lower())


def _probe_soundfile(path: Path) -> AudioInfo | None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return None  # let PyAV try
    if info.samplerate <= 0 or info.channels <= 0:
        return None
    return AudioInfo(
        format=_soundfile_format_name(info.format, info.subtype),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        duration_s=info.frames / info.samplerate,
    )


def _decode_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    """None when libsndfile cannot open the file (PyAV gets a go); AudioDecodeError if it breaks mid-read."""
    import soundfile as sf

    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return None
    with handle:
        sample_rate, channels = int(handle.samplerate), int(handle.channels)
        if sample_rate <= 0 or channels <= 0:
            return None
        declared_frames, major, subtype = handle.frames, handle.format, handle.subtype
        blocks = []
        try:  # in blocks: a corrupt header may declare billions of frames
            while True:
                block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                blocks.append(block.T)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioDecodeError(f"truncated or corrupt stream: {_short(exc)}", path) from None
    samples = np.concatenate(blocks, axis=1) if blocks else np.zeros((channels, 0), np.float32)
    decoded_s = samples.shape[1] / sample_rate
    _check_declared_length(path, declared_frames / sample_rate, decoded_s)
    if major in ("WAV", "WAVEX") and subtype in _WAV_BYTES_PER_SAMPLE:
        declared_s = _wav_declared_s(path, sample_rate, channels, _WAV_BYTES_PER_SAMPLE[subtype] * channels)
        _check_declared_length(path, declared_s, decoded_s)
    return np.ascontiguousarray(samples), sample_rate


# --- PyAV backend ------------------------------------------------------------------------------------


def _open_pyav(path: Path):
    import av

    try:
        container = av.open(str(path), "r", metadata_errors="replace")
    except av.FFmpegError as exc:
        if isinstance(exc, av.EOFError):
            raise AudioDecodeError("truncated file: it ends inside the header", path) from None
        if isinstance(exc, av.InvalidDataError):
            raise AudioDecodeError("not an audio file: no decodable audio stream", path) from None
        raise AudioDecodeError(f"not an audio file: {_short(exc)}", path) from None
    if not container.streams.audio:
        name = container.format.name
        container.close()
        raise AudioDecodeError(f"not an audio file: no decodable audio stream (looks like {name})", path)
    ctx = container.streams.audio[0].codec_context
    if ctx is None or not ctx.sample_rate or not ctx.channels:
        container.close()
        reason = "no decoder for its codec" if ctx is None else "no sample rate or channel count"
        raise AudioDecodeError(f"undecodable audio stream: {reason}", path)
    return container


def _pyav_format_name(container, stream) -> str:
    if "wav" in container.format.name.split(","):
        return "wav"
    codec = stream.codec_context.name
    return _FFMPEG_CODEC_NAMES.get(codec, codec)


def _pyav_declared_s(path: Path, container, stream) -> float | None:
    names = container.format.name.split(",")
    trusted = any(name in _EXACT_DURATION_CONTAINERS for name in names)
    if "mp3" in names:
        trusted = _has_mp3_length_header(path)
    if not trusted:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _has_mp3_length_header(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(10)
        start = 0
        if head[:3] == b"ID3" and len(head) == 10:  # skip an ID3v2 tag (syncsafe size)
            size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
            start = 10 + size
        f.seek(start)
        first_frame = f.read(200)
    return any(tag in first_frame for tag in (b"Xing", b"Info", b"VBRI"))


def _probe_pyav(path: Path) -> AudioInfo:
    container = _open_pyav(path)
    with container:
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        duration_s = None
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / 1_000_000
        info = AudioInfo(
            format=_pyav_format_name(container, stream),
            sample_rate=int(ctx.sample_rate),
            channels=int(ctx.channels),
            duration_s=duration_s if duration_s is not None else -1.0,
        )
    if info.duration_s < 0:  # no header duration: decode to measure
        samples, sample_rate = _decode_pyav(path)
        info = AudioInfo(info.format, sample_rate, samples.shape[0], samples.shape[1] / sample_rate)
    return info


def _frame_to_array(frame) -> np.ndarray:
    """One decoded frame as float32 ``(channels, samples)``, scaled to [-1, 1) like libsndfile does."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    fmt = frame.format
    if not fmt.is_planar:
        data = data.reshape(-1, channels).T
    name = fmt.name.rstrip("p")
    if name == "u8":
        return (data.astype(np.float32) - 128.0) / 128.0
    if name == "s16":
        return data.astype(np.float32) / 32768.0
    if name == "s32":
        return (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    if name == "s64":
        return (data.astype(np.float64) / 9223372036854775808.0).astype(np.float32)
    return data.astype(np.float32)  # flt, dbl


def _decode_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    container = _open_pyav(path)
    with container:
        stream = container.streams.audio[0]
        chunks: list[np.ndarray] = []
        sample_rate = channels = None
        try:
            for frame in container.decode(stream):
                if frame.samples == 0:
                    continue
                array = _frame_to_array(frame)
                if sample_rate is None:
                    sample_rate, channels = frame.sample_rate, array.shape[0]
                elif (frame.sample_rate, array.shape[0]) != (sample_rate, channels):
                    raise AudioDecodeError("sample rate or channel count changes mid-stream", path)
                chunks.append(array)
        except av.FFmpegError as exc:
            if not chunks:
                codec = stream.codec_context.name
                raise AudioDecodeError(f"undecodable {codec} stream: {_short(exc)}", path) from None
            at = sum(c.shape[1] for c in chunks) / sample_rate
            raise AudioDecodeError(f"truncated or corrupt stream at {at:.2f} s: {_short(exc)}", path) from None
        declared_s = _pyav_declared_s(path, container, stream)
    if sample_rate is None or not sample_rate > 0:
        raise AudioDecodeError("no audio samples", path)
    samples = np.concatenate(chunks, axis=1)
    _check_declared_length(path, declared_s, samples.shape[1] / sample_rate)
    if declared_s is not None and declared_s > 0:
        # AAC and friends decode whole frames; the container's exact duration trims the encoder padding.
        samples = samples[:, : max(1, round(declared_s * sample_rate))]
    return np.ascontiguousarray(samples), int(sample_rate)


def _short(exc: BaseException) -> str:
    """The library's message without the file path it repeats (the path is on the error already)."""
    text = (
        getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    )
    return text.splitlines()[0].removeprefix("Error : ").strip()[:160]
