"""The demo day of raw uploads, and one-file helpers for tests.

The demo day is real speech (:mod:`emo_assets.lib.audio.spoken`: espeak-ng saying contact-centre
sentences with pauses): one speaker per mono recording, and two-channel calls with the agent on the
left and the customer on the right under a ``channels.toml``. One recording is line noise with no
speech, one upload is not audio at all: both end in the quarantine.

:func:`synth_speech` is something else: speech-like sound (a voiced source with a wandering pitch
contour shaped by two formants, syllable envelopes, pauses and fricative noise bursts) that needs no
system package. It exercises decoding, resampling and loudness; a voice-activity model does not hear
it as speech, so it is scored only with fixed windows (``EMO_SEGMENTS=windows``).

Byte-determinism (same seed, same numpy/libsndfile/av/espeak-ng versions -> same bytes): WAV, FLAC,
MP3 (LAME via libsndfile), Ogg Vorbis and Ogg Opus (libsndfile; its random Ogg serial number is
replaced by a fixed one), M4A/AAC (ffmpeg's aac encoder through PyAV with ``+bitexact``). Different
library versions may change encoded bytes, never the decodability or the duration.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np

# codec -> (soundfile format, subtype) for everything libsndfile writes; "aac" goes through PyAV.
_SOUNDFILE_CODECS = {
    "wav_pcm_u8": ("WAV", "PCM_U8"),
    "wav_pcm_16": ("WAV", "PCM_16"),
    "wav_pcm_24": ("WAV", "PCM_24"),
    "wav_pcm_32": ("WAV", "PCM_32"),
    "wav_float": ("WAV", "FLOAT"),
    "wav_double": ("WAV", "DOUBLE"),
    "wav_ulaw": ("WAV", "ULAW"),
    "wav_alaw": ("WAV", "ALAW"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "vorbis": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
}
CODECS = (*_SOUNDFILE_CODECS, "aac")
# What probe_audio reports for each codec (see the format convention in emo_assets.lib.audio.decode).
CODEC_FORMAT = {
    **{c: "wav" for c in _SOUNDFILE_CODECS if c.startswith("wav_")},
    "flac": "flac",
    "mp3": "mp3",
    "vorbis": "vorbis",
    "opus": "opus",
    "aac": "aac",
}
_OGG_SERIAL = 0x656D6F31  # "emo1"
_WRITE_BLOCK_FRAMES = 8192


@dataclass(frozen=True)
class SampleRecording:
    """One file of the demo day. ``speech``: ``one`` speaker, a two-voice ``call`` (agent left,
    customer right), or ``none`` (line noise: quarantined for holding no speech)."""

    name: str  # path relative to the day directory
    codec: str
    sample_rate: int
    channels: int
    seconds: float
    speech: str = "one"


SAMPLE_DAY: tuple[SampleRecording, ...] = (
    SampleRecording("calls/call_0001.wav", "wav_pcm_16", 44100, 2, 16.0, "call"),
    SampleRecording("calls/call_0002_phone.wav", "wav_ulaw", 8000, 1, 4.0),
    SampleRecording("calls/call_0003.mp3", "mp3", 44100, 2, 13.0, "call"),
    SampleRecording("calls/call_0004.m4a", "aac", 44100, 1, 3.0),
    SampleRecording("interviews/interview_0001.flac", "flac", 22050, 1, 9.0),
    SampleRecording("interviews/interview_0002.wav", "wav_float", 48000, 1, 3.5),
    SampleRecording("voicemail/voicemail_0001.opus", "opus", 48000, 1, 4.5),
    SampleRecording("voicemail/voicemail_0002.ogg", "vorbis", 22050, 2, 3.0),
    SampleRecording("voicemail/voicemail_0003_line_noise.wav", "wav_pcm_16", 16000, 1, 3.0, "none"),
)
BROKEN_SAMPLE = "uploads/broken_upload.mp3"
# The recordings with speech, and the one a voice-activity model finds none in.
SPOKEN = tuple(rec for rec in SAMPLE_DAY if rec.speech != "none")
NO_SPEECH_SAMPLE = next(rec.name for rec in SAMPLE_DAY if rec.speech == "none")
# The calls folder's channel config: its stereo recordings are split into agent and customer.
CHANNELS_CONFIG = "calls/channels.toml"
CHANNELS_TOML = '[channels]\nagent = "left"\ncustomer = "right"\n'


def write_sample_day(day_dir: Path, seed: int = 0) -> list[Path]:
    """Write the demo day (:data:`SAMPLE_DAY`, the undecodable :data:`BROKEN_SAMPLE` and the calls'
    :data:`CHANNELS_CONFIG`) under ``day_dir`` and return the paths, sorted. Same seed, same files.
    Needs espeak-ng (:class:`~emo_assets.lib.audio.spoken.SpeechSynthesisError` says how to install it)."""
    day_dir = Path(day_dir)
    # Every recording is made before the first is written: no half-written day without espeak-ng.
    samples = [sample_samples(rec, np.random.default_rng([seed, index])) for index, rec in enumerate(SAMPLE_DAY)]
    paths = [
        write_encoded(day_dir / rec.name, x, rec.sample_rate, rec.codec)
        for rec, x in zip(SAMPLE_DAY, samples, strict=True)
    ]
    config = day_dir / CHANNELS_CONFIG
    config.write_text(CHANNELS_TOML, encoding="utf-8")
    paths.append(config)
    broken = day_dir / BROKEN_SAMPLE
    broken.parent.mkdir(parents=True, exist_ok=True)
    # An upload cut off after a few bytes of ID3 tag, followed by junk: no MPEG frame anywhere.
    junk = np.random.default_rng([seed, 999]).integers(0, 0xE0, 2048, dtype=np.uint8).tobytes()
    broken.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x0f" + b"\x00" * 15 + junk)
    paths.append(broken)
    return sorted(paths)


def sample_samples(rec: SampleRecording, rng: np.random.Generator) -> np.ndarray:
    """The float ``(channels, n)`` samples of one demo recording."""
    from emo_assets.lib.audio import spoken

    if rec.speech == "call":
        return spoken.spoken_call(rec.seconds, rec.sample_rate, rng)
    if rec.speech == "none":
        return line_noise(rec.seconds, rec.sample_rate, rng, rec.channels)
    return spoken.spoken_speech(rec.seconds, rec.sample_rate, rng, channels=rec.channels)


def line_noise(seconds: float, sample_rate: int, rng: np.random.Generator | int = 0, channels: int = 1) -> np.ndarray:
    """A line with nobody on it: 50 Hz mains hum and its harmonics over faint hiss, float32 ``(channels, n)``."""
    rng = np.random.default_rng(rng)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    hum = sum(0.02 / k * np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) for k in (1, 2, 3))
    rows = [hum + 0.004 * rng.standard_normal(t.size) for _ in range(channels)]
    return np.stack(rows).astype(np.float32)


def synth_speech(seconds: float, sample_rate: int, rng: np.random.Generator | int = 0, channels: int = 1) -> np.ndarray:
    """Speech-like float32 ``(channels, n)`` with peak 0.6: syllables of voiced sound with a pitch
    contour, pauses and noise bursts. Voice (pitch, range, tempo, loudness) is drawn from ``rng``."""
    rng = np.random.default_rng(rng)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0_base = rng.choice([105.0, 140.0, 200.0, 250.0])
    f0_range = rng.uniform(0.1, 0.6)  # octaves: flat (tired) to lively (excited)
    syllable_s = rng.uniform(0.16, 0.3)

    # Pitch: slow random wiggle (a sum of low-frequency sines) plus a falling declination.
    wiggle = (
        sum(
            rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t + rng.uniform(0, 6.3))
            for _ in range(3)
        )
        / 3.0
    )
    f0 = f0_base * 2.0 ** (f0_range * wiggle - 0.15 * t / max(seconds, 1e-9))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate

    # Voiced source: harmonics under two formant resonances, up to 4.5 kHz and below Nyquist.
    # Gains change as slowly as the pitch, so they are computed every 5 ms and interpolated.
    formant1, formant2 = rng.uniform(450, 800), rng.uniform(1100, 2200)
    top_hz = min(4500.0, 0.45 * sample_rate)
    hop = max(1, sample_rate // 200)
    control = np.arange(0, n, hop)
    positions = np.arange(n)
    voiced = np.zeros(n)
    for k in range(1, 60):
        harmonic = k * f0[control]
        if n == 0 or harmonic.min() >= top_hz:
            break
        gain = (1.0 / k) * (
            1.0
            + 3.0 * np.exp(-(((harmonic - formant1) / 200.0) ** 2))
            + 2.0 * np.exp(-(((harmonic - formant2) / 300.0) ** 2))
        )
        gain = np.interp(positions, control, np.where(harmonic < top_hz, gain, 0.0))
        voiced += gain * np.sin(k * phase)

    # Syllable envelope: voiced bumps separated by pauses; some syllables start with a fricative.
    envelope = np.zeros(n)
    noise_envelope = np.zeros(n)
    cursor = rng.uniform(0.05, 0.2)
    while cursor < seconds - 0.1:
        length = syllable_s * rng.uniform(0.6, 1.4)
        start, stop = int(cursor * sample_rate), min(n, int((cursor + length) * sample_rate))
        if stop > start:
            envelope[start:stop] = np.sin(np.linspace(0, np.pi, stop - start)) * rng.uniform(0.5, 1.0)
        if rng.random() < 0.35:
            burst = int(rng.uniform(0.04, 0.1) * sample_rate)
            b0 = max(0, start - burst)
            noise_envelope[b0:start] = np.hanning(start - b0) if start > b0 else 0.0
        cursor += length + (rng.uniform(0.2, 0.5) if rng.random() < 0.2 else rng.uniform(0.02, 0.08))
    fricative = np.diff(rng.standard_normal(n + 1)) * 0.15

    signal = voiced * envelope + fricative * noise_envelope + 0.002 * rng.standard_normal(n)
    signal = 0.6 * signal / max(np.abs(signal).max(), 1e-9)
    if channels == 1:
        return signal[np.newaxis].astype(np.float32)
    # Extra channels: the same voice, slightly quieter and with its own faint room noise.
    rows = [signal] + [0.9 * signal + 0.003 * rng.standard_normal(n) for _ in range(channels - 1)]
    return np.clip(np.stack(rows), -1.0, 1.0).astype(np.float32)


def write_tone(
    path: str | os.PathLike,
    codec: str,
    seconds: float = 1.0,
    sample_rate: int = 16000,
    channels: int = 1,
    frequency_hz: float = 1000.0,
    amplitude: float = 0.5,
) -> np.ndarray:
    """Write a sine tone (same phase on every channel) with ``codec``; return the samples written."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    tone = (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)
    samples = np.repeat(tone[np.newaxis], channels, axis=0)
    write_encoded(path, samples, sample_rate, codec)
    return samples


def write_encoded(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, codec: str) -> Path:
    """Encode float ``(channels, n)`` (or 1-D mono) samples as ``codec`` (one of :data:`CODECS`).

    The bytes follow the codec, not the file name, so a test can write a WAV named ``.mp3``.
    """
    path = Path(path)
    x = np.asarray(samples, dtype=np.float32)
    x = x[np.newaxis] if x.ndim == 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "aac":
        path.write_bytes(_encode_aac(x, sample_rate))
    elif codec in _SOUNDFILE_CODECS:
        import soundfile as sf

        fmt, subtype = _SOUNDFILE_CODECS[codec]
        buffer = io.BytesIO()
        # In blocks: libvorbis overflows its stack when libsndfile hands it minutes of audio at once
        # (libsndfile issue 1095).
        with sf.SoundFile(buffer, "w", sample_rate, x.shape[0], subtype, format=fmt) as out:
            for start in range(0, x.shape[1], _WRITE_BLOCK_FRAMES):
                out.write(x[:, start : start + _WRITE_BLOCK_FRAMES].T)
        data = buffer.getvalue()
        if fmt == "OGG":
            data = _fix_ogg_serial(data)
        elif subtype in ("FLOAT", "DOUBLE"):
            data = _zero_peak_timestamp(data)
        path.write_bytes(data)
    else:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    return path


def _encode_aac(x: np.ndarray, sample_rate: int) -> bytes:
    """AAC-LC in an M4A (MP4) container. Frames carry pts from 0 so the muxer writes an edit list
    that hides the encoder's priming samples: decoders then return exactly ``x.shape[1]`` samples."""
    import av

    layout = {1: "mono", 2: "stereo"}[x.shape[0]]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ipod", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("aac", rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        resampler = av.AudioResampler(
            format=stream.format.name,
            layout=layout,
            rate=sample_rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        pts = 0
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            chunk.pts, chunk.time_base = pts, Fraction(1, sample_rate)
            pts += chunk.samples
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _zero_peak_timestamp(data: bytes) -> bytes:
    """libsndfile stamps the PEAK chunk of float WAVs with the current time; make it 0."""
    out = bytearray(data)
    offset = 12
    while offset + 8 <= len(out) and out[:4] == b"RIFF":
        chunk_id, size = out[offset : offset + 4], int.from_bytes(out[offset + 4 : offset + 8], "little")
        if chunk_id == b"PEAK":
            out[offset + 12 : offset + 16] = b"\0\0\0\0"  # after the 4-byte version
            break
        if chunk_id == b"data":
            break
        offset += 8 + size + (size & 1)
    return bytes(out)


def _fix_ogg_serial(data: bytes) -> bytes:
    """Replace libsndfile's random Ogg stream serial number with a fixed one (and redo page CRCs)."""
    out = bytearray(data)
    offset = 0
    while offset + 27 <= len(out) and out[offset : offset + 4] == b"OggS":
        n_segments = out[offset + 26]
        page_len = 27 + n_segments + sum(out[offset + 27 : offset + 27 + n_segments])
        out[offset + 14 : offset + 18] = _OGG_SERIAL.to_bytes(4, "little")
        out[offset + 22 : offset + 26] = b"\0\0\0\0"
        out[offset + 22 : offset + 26] = _ogg_crc(bytes(out[offset : offset + page_len])).to_bytes(4, "little")
        offset += page_len
    return bytes(out)


@cache
def _ogg_crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return tuple(table)


def _ogg_crc(page: bytes) -> int:
    table, crc = _ogg_crc_table(), 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) & 0xFF) ^ byte]
    return crc
