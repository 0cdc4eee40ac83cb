"""From any recording to the model's input: 16 kHz mono samples exactly as stored, loudness, atomic writing.

:func:`load_mono_16k` is the one way a file becomes what the model hears, whatever door it enters: the
pipeline (its 16 kHz FLAC in the lake), ``emo analyze`` (``processed_audio.wav``), ``emo web`` and
``emo similar FILE``. It decodes, downmixes, resamples (:func:`stream_mono_16k`) and quantises to 16-bit
PCM (:func:`to_pcm16`), so the samples it returns are bit for bit the ones a 16-bit file holds and every
reader of that file (soundfile, funasr) gets back. Quantising is idempotent: loading a stored file again
gives the same samples.

Decoding lives in :mod:`emo_assets.lib.audio.decode`; its public names are re-exported here so callers need
one import: ``from emo_assets.lib.audio.load import load_mono_16k, AudioDecodeError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_assets.lib.audio.decode import AudioDecodeError, AudioInfo, decode_audio, probe_audio
from emo_assets.lib.files import objectstore
from emo_assets.lib.files.atomic import atomic_write
from emo_assets.lib.files.faults import MachineFault, is_machine_fault, machine_fault
from emo_assets.lib.schemas import SAMPLE_RATE

__all__ = [
    "SILENCE_FLOOR_DBFS",
    "FLAC_SUBTYPE",
    "AudioDecodeError",
    "AudioInfo",
    "probe_audio",
    "decode_audio",
    "to_mono_16k",
    "load_mono_16k",
    "rms_dbfs",
    "is_silent",
    "write_flac_atomic",
    "stream_mono_16k",
    "write_mono_16k_flac",
    "write_wav_atomic",
    "to_pcm16",
    "as_stored",
    "PCM16_SCALE",
    "PCM16_SUBTYPE",
    "FlacSummary",
    "FlacReader",
    "SILENT_BELOW_DBFS",
]

# rms_dbfs of digital silence (and of an empty array): a finite floor instead of -inf, so it can be
# stored, averaged and compared. 16-bit dither noise sits near -101 dBFS, so nothing real goes below.
SILENCE_FLOOR_DBFS = -120.0
# FLAC cannot store float. 16-bit is what speech corpora use, and the resampled 16 kHz audio we write
# comes from 16-bit or lossy sources anyway; quantisation noise (~-98 dBFS) is far below any speech.
PCM16_SUBTYPE = FLAC_SUBTYPE = "PCM_16"
# A 16-bit sample k means k / 32768 to every reader (libsndfile, soundfile, torchaudio, funasr).
PCM16_SCALE = 32768
# A recording whose RMS level is below this is flagged ``is_silent`` (still processed).
SILENT_BELOW_DBFS = -60.0
# soxr "HQ": 20-bit precision, passband to 91% of Nyquist. VHQ costs more and buys nothing for a model.
_SOXR_QUALITY = "HQ"


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Average the channels and resample to 16 kHz with soxr. Returns a new float32 1-D array.

    ``samples`` is ``(channels, n)`` as :func:`decode_audio` returns it, or 1-D mono. The input is
    never modified. These are float samples before storing: what the model hears is
    :func:`load_mono_16k` (the same resample, streamed, then rounded to 16 bits).
    """
    import soxr

    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise ValueError(f"to_mono_16k expects (channels, samples) or (samples,), got shape {samples.shape}")
    if sample_rate <= 0:
        raise ValueError(f"to_mono_16k needs a positive sample rate, got {sample_rate}")
    mono = samples.astype(np.float32) if samples.ndim == 1 else samples.mean(axis=0, dtype=np.float32)
    if sample_rate == SAMPLE_RATE or mono.size == 0:
        return np.array(mono, dtype=np.float32, copy=True)
    resampled = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality=_SOXR_QUALITY)
    return np.ascontiguousarray(resampled, dtype=np.float32)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples -> the int16 values a 16-bit file stores: ``x * 32768`` rounded half to even,
    clipped to [-32768, 32767]. This is libsndfile's own rule when it writes float to a 16-bit FLAC
    (tested), so the lake's FLACs written before this function existed hold the same numbers. Returns a
    new array.

    NaN/Inf is refused with ValueError: there is no 16-bit value for it.
    """
    x = np.asarray(samples, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("to_pcm16: NaN/Inf samples have no 16-bit value")
    scaled = np.rint(x * np.float32(PCM16_SCALE))
    return np.clip(scaled, -PCM16_SCALE, PCM16_SCALE - 1).astype(np.int16)


def as_stored(samples: np.ndarray) -> np.ndarray:
    """Float samples exactly as a 16-bit file gives them back: ``to_pcm16(samples) / 32768``, float32.

    Idempotent: ``as_stored(as_stored(x))`` equals ``as_stored(x)``.
    """
    return to_pcm16(samples).astype(np.float32) / np.float32(PCM16_SCALE)


def load_mono_16k(path: str | os.PathLike) -> np.ndarray:
    """Any supported file -> its 16 kHz mono float32 samples exactly as a 16-bit file stores them.

    The samples the model hears through every door: the pipeline writes them to the lake's FLAC
    (:func:`stream_mono_16k` into :func:`write_mono_16k_flac`) and reads them back unchanged; ``emo
    analyze``, ``emo web`` and ``emo similar FILE`` call this function, and ``processed_audio.wav``
    holds them. It is :func:`stream_mono_16k` joined, so it is the pipeline's computation, block for block.

    Raises AudioDecodeError for undecodable bytes, an empty stream, NaN/Inf samples and a clip too
    short to survive resampling.
    """
    blocks = list(stream_mono_16k(path))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def stream_mono_16k(path: str | os.PathLike, channel: int | None = None) -> Iterator[np.ndarray]:
    """:func:`load_mono_16k` block by block: 1-D float32 16 kHz blocks as stored (:func:`as_stored`),
    memory bounded for any length.

    Decoding (:mod:`emo_assets.lib.audio.decode_stream`), downmix, soxr's streaming resampler and the
    16-bit quantisation run per block. AudioDecodeError may come at any block, the last one included
    (truncation is only known at the end): treat the output as provisional until the iterator is exhausted.
    ``channel`` (0-based) takes that channel alone instead of the downmix (a two-channel call's side).
    """
    import soxr

    from emo_assets.lib.audio.decode_stream import open_stream

    stream = open_stream(path)
    if channel is not None and not 0 <= channel < stream.channels:
        raise AudioDecodeError(f"no channel {channel}: the file has {stream.channels} channel(s)", path)
    resampler = None
    if stream.sample_rate != SAMPLE_RATE:
        resampler = soxr.ResampleStream(stream.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality=_SOXR_QUALITY)
    produced = 0
    for block in stream:
        mono = block.mean(axis=0, dtype=np.float32) if channel is None else np.ascontiguousarray(block[channel])
        out = mono if resampler is None else resampler.resample_chunk(mono)
        produced += out.size
        if out.size:
            yield as_stored(out)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        produced += tail.size
        if tail.size:
            yield as_stored(tail)
    if produced == 0:
        raise AudioDecodeError(
            f"no audio samples: {stream.frames} sample(s) at {stream.sample_rate} Hz is shorter than one 16 kHz sample",
            path,
        )


@dataclass(frozen=True)
class FlacSummary:
    """What :func:`write_mono_16k_flac` wrote: length and loudness, computed on the way through."""

    path: Path
    num_samples: int
    rms_dbfs: float

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE


def write_mono_16k_flac(path: str | os.PathLike, blocks: Iterable[np.ndarray]) -> FlacSummary:
    """Write 16 kHz mono blocks as 16-bit FLAC atomically (temp file, then rename), in constant memory.

    Each block is quantised with :func:`to_pcm16` and written as integers, so the file holds exactly
    :func:`as_stored` of the blocks (blocks from :func:`stream_mono_16k` are stored as they are); the
    loudness is measured on those stored samples. If ``blocks`` raises (e.g. AudioDecodeError at the end
    of a truncated file), nothing is left at ``path`` or beside it and the error propagates.
    """
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count, sum_squares = 0, 0.0
    try:
        with atomic_write(path) as f:
            with sf.SoundFile(f, "w", SAMPLE_RATE, 1, FLAC_SUBTYPE, format="FLAC") as out:
                for block in blocks:
                    x = np.asarray(block, dtype=np.float32)
                    if not np.isfinite(x).all():
                        raise ValueError(f"write_mono_16k_flac: refusing to write NaN/Inf samples to {path}")
                    pcm = to_pcm16(x)
                    stored = pcm.astype(np.float64) / PCM16_SCALE
                    count += pcm.size
                    sum_squares += float(np.dot(stored, stored))
                    try:
                        out.write(pcm)
                    except (OSError, MemoryError):
                        raise
                    except Exception as exc:  # libsndfile's failed write of finite 16-bit samples: the disk's fault
                        raise MachineFault(
                            f"writing the 16 kHz FLAC failed at {path}: {type(exc).__name__}: {exc}; "
                            f"not the recording's fault, nothing quarantined: check free space and write access "
                            f"of {path.parent}, then re-run the day"
                        ) from exc
    except (OSError, MemoryError) as exc:
        if is_machine_fault(exc):
            raise machine_fault(exc, "writing the 16 kHz FLAC", path) from exc
        raise
    level = SILENCE_FLOOR_DBFS
    if count and sum_squares > 0.0:
        level = max(SILENCE_FLOOR_DBFS, 10.0 * float(np.log10(sum_squares / count)))
    return FlacSummary(path=path, num_samples=count, rms_dbfs=level)


class FlacReader:
    """A 16 kHz mono FLAC written by :func:`write_mono_16k_flac`, read by position: ``num_samples``
    and ``read(offset, n)`` -> ``n`` float32 samples. Each read opens the file, so one reader may be
    used from several threads and holds no file open between reads.

    Raises AudioDecodeError when the file is not such a FLAC or holds fewer samples than asked for,
    OSError when it cannot be opened.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import soundfile as sf

        # A FLAC in an object store (a URI) is read through fsspec, range by range.
        self.path = path if objectstore.is_remote(path) else Path(path)
        try:
            with self._source() as source:
                info = sf.info(source)
        except sf.LibsndfileError as exc:
            self._raise_unless_missing(exc)
        if (info.samplerate, info.channels) != (SAMPLE_RATE, 1):
            raise AudioDecodeError(
                f"expected {SAMPLE_RATE} Hz mono, found {info.samplerate} Hz with {info.channels} channel(s)", self.path
            )
        self.num_samples = int(info.frames)

    def read(self, offset: int, n: int) -> np.ndarray:
        import soundfile as sf

        try:
            with self._source() as source, sf.SoundFile(source) as flac:
                flac.seek(offset)
                samples = flac.read(n, dtype="float32")
        except sf.LibsndfileError as exc:
            self._raise_unless_missing(exc)
        if samples.ndim != 1 or len(samples) != n:
            raise AudioDecodeError(f"resampled audio changed while read: samples {offset}-{offset + n}", self.path)
        return samples

    def _source(self):
        """What soundfile opens: the local file's name, or a file object reading the remote FLAC."""
        return objectstore.open_input(self.path) if isinstance(self.path, str) else nullcontext(str(self.path))

    def _raise_unless_missing(self, exc: Exception):
        with objectstore.open_input(self.path):  # a missing or forbidden file is an OSError, not bad audio
            pass
        raise AudioDecodeError(f"not a readable FLAC: {exc}", self.path) from exc


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS).

    Digital silence and empty input return :data:`SILENCE_FLOOR_DBFS` (-120.0) instead of -inf.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return SILENCE_FLOOR_DBFS
    mean_square = float(np.mean(np.square(x)))
    if not mean_square > 0.0:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 10.0 * float(np.log10(mean_square)))


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENT_BELOW_DBFS) -> bool:
    """True when the RMS level is below ``threshold_dbfs``."""
    return rms_dbfs(samples) < threshold_dbfs


def write_flac_atomic(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float samples as 16-bit FLAC, atomically: temp file in the same directory, then
    ``os.replace``. Readers never see a half-written file; a re-run simply replaces it.

    The file holds :func:`as_stored` of the samples (clipped to [-1, 1), quantised with :func:`to_pcm16`);
    NaN/Inf is refused with ValueError. Returns the final path.
    """
    return _write_pcm16_atomic(path, samples, sample_rate, "FLAC")


def write_wav_atomic(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """:func:`write_flac_atomic` as 16-bit PCM WAV (``processed_audio.wav``): the file holds exactly
    :func:`as_stored` of the samples."""
    return _write_pcm16_atomic(path, samples, sample_rate, "WAV")


def _write_pcm16_atomic(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, file_format: str) -> Path:
    import soundfile as sf

    path = Path(path)
    x = np.asarray(samples)
    name = f"write_{file_format.lower()}_atomic"
    if x.ndim != 1:
        raise ValueError(f"{name} writes mono: expected a 1-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: refusing to write NaN/Inf samples to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        sf.write(f, to_pcm16(x), sample_rate, format=file_format, subtype=PCM16_SUBTYPE)
    return path
