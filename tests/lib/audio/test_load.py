"""Decoding every format we accept, to 16 kHz mono, and refusing every kind of bad file cleanly."""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emo_assets.lib.audio import load as audio
from emo_assets.lib.audio.load import (
    SILENCE_FLOOR_DBFS,
    AudioDecodeError,
    AudioInfo,
    FlacReader,
    decode_audio,
    is_silent,
    load_mono_16k,
    probe_audio,
    rms_dbfs,
    to_mono_16k,
    write_flac_atomic,
    write_mono_16k_flac,
)
from emo_assets.lib.audio.sample_day import CODEC_FORMAT, write_encoded, write_tone
from emo_assets.lib.schemas import SAMPLE_RATE as TARGET_SAMPLE_RATE

LOSSLESS = {"wav_pcm_16", "wav_pcm_24", "wav_pcm_32", "wav_float", "wav_double", "flac"}
# (codec, native sample rate, channels): every format we accept, at rates uploads really have.
FORMATS = [
    ("wav_pcm_u8", 8000, 1),
    ("wav_ulaw", 8000, 1),
    ("wav_alaw", 8000, 1),
    ("wav_pcm_16", 44100, 2),
    ("wav_pcm_24", 48000, 1),
    ("wav_pcm_32", 22050, 1),
    ("wav_float", 44100, 1),
    ("wav_double", 16000, 1),
    ("flac", 44100, 2),
    ("mp3", 44100, 2),
    ("mp3", 22050, 1),
    ("aac", 44100, 1),
    ("aac", 48000, 2),
    ("opus", 48000, 1),
    ("vorbis", 44100, 2),
]
FORMAT_IDS = [f"{codec}-{rate}-{channels}ch" for codec, rate, channels in FORMATS]
EXTENSION = {"flac": ".flac", "mp3": ".mp3", "aac": ".m4a", "opus": ".opus", "vorbis": ".ogg"}


def path_for(directory: Path, codec: str, stem: str = "clip") -> Path:
    return directory / f"{stem}{EXTENSION.get(codec, '.wav')}"


def peak_frequency_hz(mono_16k: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(mono_16k * np.hanning(len(mono_16k))))
    return float(np.argmax(spectrum)) * TARGET_SAMPLE_RATE / len(mono_16k)


@pytest.mark.parametrize(("codec", "sample_rate", "channels"), FORMATS, ids=FORMAT_IDS)
def test_every_format_decodes_to_mono_16k_with_length_pitch_and_level_kept(
    tmp_path: Path, codec: str, sample_rate: int, channels: int
) -> None:
    path = path_for(tmp_path, codec)
    write_tone(path, codec, seconds=1.0, sample_rate=sample_rate, channels=channels, frequency_hz=1000.0)

    mono = load_mono_16k(path)

    assert mono.dtype == np.float32 and mono.ndim == 1
    assert np.isfinite(mono).all()
    assert abs(len(mono) - TARGET_SAMPLE_RATE) <= 0.005 * TARGET_SAMPLE_RATE  # within 5 ms of 1 s
    assert peak_frequency_hz(mono) == pytest.approx(1000.0, abs=2.0)
    # A 0.5-amplitude sine is -9.03 dBFS; companding and lossy codecs move it a little.
    assert rms_dbfs(mono) == pytest.approx(-9.03, abs=0.05 if codec in LOSSLESS else 0.3)


@pytest.mark.parametrize(("codec", "sample_rate", "channels"), FORMATS, ids=FORMAT_IDS)
def test_probe_reports_format_rate_channels_and_duration(
    tmp_path: Path, codec: str, sample_rate: int, channels: int
) -> None:
    path = path_for(tmp_path, codec)
    write_tone(path, codec, seconds=0.5, sample_rate=sample_rate, channels=channels)

    info = probe_audio(path)

    assert info == AudioInfo(CODEC_FORMAT[codec], sample_rate, channels, pytest.approx(0.5, abs=0.005))


@pytest.mark.parametrize("codec", ["wav_pcm_16", "flac", "mp3", "aac", "vorbis"])
def test_stereo_downmix_averages_channels(tmp_path: Path, codec: str) -> None:
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    path = path_for(tmp_path, codec)
    write_encoded(path, np.stack([tone, -tone]), 44100, codec)

    assert rms_dbfs(load_mono_16k(path)) < -80.0  # L = -R cancels out


def test_decode_keeps_channels_and_native_rate(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    t = np.arange(4410) / 44100
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 880 * t)
    write_encoded(path, np.stack([left, right]), 44100, "wav_float")

    samples, sample_rate = decode_audio(path)

    assert sample_rate == 44100 and samples.dtype == np.float32 and samples.shape == (2, 4410)
    np.testing.assert_allclose(samples, np.stack([left, right]), atol=1e-6)


def test_eight_bit_unsigned_wav_is_centred_on_zero(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    write_encoded(path, np.zeros(800), 8000, "wav_pcm_u8")

    samples, _ = decode_audio(path)

    assert np.abs(samples).max() < 1 / 128


def test_wav_named_mp3_is_decoded_as_the_wav_it_is(tmp_path: Path) -> None:
    path = tmp_path / "actually_a_wav.mp3"
    write_tone(path, "wav_pcm_16", seconds=0.25, sample_rate=16000)

    assert probe_audio(path).format == "wav"
    assert len(load_mono_16k(path)) == 4000


def wav_header(n_frames_declared: int, sample_rate: int = 16000) -> bytes:
    data_bytes = 2 * n_frames_declared
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def mp3_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "source.mp3"
    write_tone(path, "mp3", seconds=2.0, sample_rate=44100)
    return path.read_bytes()


def float_wav_with(value: float, tmp_path: Path) -> bytes:
    x = np.full(1600, 0.1, dtype=np.float32)
    x[800] = value
    path = tmp_path / "source_float.wav"
    write_encoded(path, x, 16000, "wav_float")
    return path.read_bytes()


BAD_FILES = {
    "empty.wav": (lambda tmp: b"", "empty file (0 bytes)"),
    "text_named.wav": (lambda tmp: b"hello, this is a note, not a recording\n" * 20, "not an audio file"),
    "header_only_declaring_data.wav": (lambda tmp: wav_header(16000), "truncated stream"),
    "header_only_no_data.wav": (lambda tmp: wav_header(0), "no audio samples"),
    "half_a_wav.wav": (lambda tmp: wav_header(16000) + b"\x10\x00" * 8000, "truncated stream"),
    "picture.mp3": (lambda tmp: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "not an audio file"),
    "truncated_header.mp3": (lambda tmp: mp3_bytes(tmp)[:300], "truncated file"),
    "truncated_half.mp3": (lambda tmp: (lambda b: b[: len(b) // 2])(mp3_bytes(tmp)), "truncated stream"),
    "nan.wav": (lambda tmp: float_wav_with(np.nan, tmp), "non-finite samples (NaN/Inf)"),
    "inf.wav": (lambda tmp: float_wav_with(np.inf, tmp), "non-finite samples (NaN/Inf)"),
    "one_hertz.wav": (
        lambda tmp: wav_header(1000, sample_rate=1) + b"\x00\x01" * 1000,
        "implausible sample rate: 1 Hz",
    ),
    "zip_named.m4a": (lambda tmp: b"PK\x03\x04" + b"\x00" * 200, "not an audio file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_audio_decode_error_with_reason(tmp_path: Path, name: str) -> None:
    make_bytes, expected_reason = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make_bytes(tmp_path))

    with pytest.raises(AudioDecodeError) as decoded:
        load_mono_16k(path)

    assert decoded.value.reason.startswith(expected_reason)
    assert decoded.value.path == str(path) and str(path) in str(decoded.value)


@pytest.mark.parametrize("name", ["empty.wav", "text_named.wav", "picture.mp3", "truncated_header.mp3"])
def test_probe_refuses_what_is_not_audio(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name][0](tmp_path))

    with pytest.raises(AudioDecodeError):
        probe_audio(path)


def test_truncated_flac_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    write_tone(path, "flac", seconds=2.0, sample_rate=44100)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(AudioDecodeError, match="truncated"):
        load_mono_16k(path)


def test_decode_error_pickles_with_reason_and_path() -> None:
    error = pickle.loads(pickle.dumps(AudioDecodeError("empty file (0 bytes)", "/raw/a.wav")))

    assert (error.reason, error.path) == ("empty file (0 bytes)", "/raw/a.wav")
    assert str(error).startswith("/raw/a.wav: empty file (0 bytes)")


def test_missing_file_is_an_os_error_not_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_mono_16k(tmp_path / "gone.wav")


@pytest.fixture(scope="module")
def encoded_samples() -> list[bytes]:
    """One short file per codec, to cut and corrupt in the property test."""
    blobs = []
    with tempfile.TemporaryDirectory() as directory:
        for codec, sample_rate, channels in FORMATS:
            path = path_for(Path(directory), codec)
            write_tone(path, codec, seconds=0.3, sample_rate=sample_rate, channels=channels)
            blobs.append(path.read_bytes())
    return blobs


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    extension=st.sampled_from([".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".oga"]),
    junk=st.binary(max_size=2048),
)
def test_wild_bytes_only_ever_raise_audio_decode_error(
    encoded_samples: list[bytes], data: st.DataObject, extension: str, junk: bytes
) -> None:
    # Half the time: a real file's beginning (so the header parses), then junk.
    if data.draw(st.booleans(), label="start from a real file"):
        real = data.draw(st.sampled_from(encoded_samples), label="real file")
        cut = data.draw(st.integers(0, len(real)), label="cut at")
        junk = real[:cut] + junk
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"upload{extension}"
        path.write_bytes(junk)
        try:
            mono = load_mono_16k(path)
        except AudioDecodeError as exc:
            assert exc.reason
        else:
            assert mono.dtype == np.float32 and mono.size > 0 and np.isfinite(mono).all()


def test_to_mono_16k_returns_a_new_array_and_leaves_input_alone() -> None:
    stereo = np.stack([np.linspace(-1, 1, 1600), np.linspace(1, -1, 1600)]).astype(np.float32)
    before = stereo.copy()
    mono_16k = np.linspace(-0.5, 0.5, 1600).astype(np.float32)

    downmixed = to_mono_16k(stereo, 16000)
    same_rate = to_mono_16k(mono_16k, 16000)

    np.testing.assert_array_equal(stereo, before)
    np.testing.assert_allclose(downmixed, 0.0, atol=1e-6)
    np.testing.assert_array_equal(same_rate, mono_16k)
    assert not np.shares_memory(same_rate, mono_16k)
    assert downmixed.dtype == same_rate.dtype == np.float32


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 20000), sample_rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]))
def test_resampled_length_follows_the_rate_ratio(n: int, sample_rate: int) -> None:
    out = to_mono_16k(np.zeros((1, n), dtype=np.float32), sample_rate)

    assert out.ndim == 1 and out.dtype == np.float32
    assert abs(len(out) - n * TARGET_SAMPLE_RATE / sample_rate) <= 1.0


def test_to_mono_16k_rejects_nonsense_shapes_and_rates() -> None:
    with pytest.raises(ValueError, match="shape"):
        to_mono_16k(np.zeros((1, 2, 3)), 16000)
    with pytest.raises(ValueError, match="sample rate"):
        to_mono_16k(np.zeros(10), 0)


def test_load_mono_16k_refuses_a_clip_too_short_to_resample(tmp_path: Path) -> None:
    path = tmp_path / "one_sample.wav"
    write_encoded(path, np.array([0.1]), 44100, "wav_pcm_16")

    with pytest.raises(AudioDecodeError, match="no audio samples"):
        load_mono_16k(path)


@pytest.mark.parametrize(
    ("samples", "expected_dbfs"),
    [
        (np.zeros(1600), SILENCE_FLOOR_DBFS),
        (np.zeros(0), SILENCE_FLOOR_DBFS),
        (np.ones(1600), 0.0),
        (np.tile([1.0, -1.0], 800), 0.0),
        (0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000), -9.03),
        (np.full(1600, 1e-9), SILENCE_FLOOR_DBFS),  # below the floor clamps to it
    ],
    ids=["silence", "empty", "dc-full-scale", "square-full-scale", "sine-0.5", "below-floor"],
)
def test_rms_dbfs(samples: np.ndarray, expected_dbfs: float) -> None:
    assert rms_dbfs(samples) == pytest.approx(expected_dbfs, abs=0.01)


def test_is_silent_uses_the_threshold() -> None:
    quiet = np.full(1600, 10 ** (-70 / 20), dtype=np.float32)  # -70 dBFS
    assert is_silent(np.zeros(1600))
    assert is_silent(quiet)
    assert not is_silent(quiet, threshold_dbfs=-80.0)
    assert not is_silent(np.full(1600, 0.1))


def test_write_flac_atomic_writes_16k_mono_16bit_and_leaves_no_temp_files(tmp_path: Path) -> None:
    samples = (0.5 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)).astype(np.float32)
    path = tmp_path / "out" / "clip.flac"

    assert write_flac_atomic(path, samples) == path

    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        "FLAC",
        audio.FLAC_SUBTYPE,
        16000,
        1,
        8000,
    )
    np.testing.assert_allclose(load_mono_16k(path), samples, atol=1 / 32768 + 1e-7)
    assert os.listdir(path.parent) == ["clip.flac"]


def test_write_flac_atomic_clips_and_refuses_nan(tmp_path: Path) -> None:
    path = tmp_path / "loud.flac"
    write_flac_atomic(path, np.array([2.0, -3.0, 0.0] * 100, dtype=np.float32))
    assert np.abs(load_mono_16k(path)).max() <= 1.0

    with pytest.raises(ValueError, match="NaN"):
        write_flac_atomic(tmp_path / "bad.flac", np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="mono"):
        write_flac_atomic(tmp_path / "bad.flac", np.zeros((2, 10)))
    assert not (tmp_path / "bad.flac").exists()


def test_write_flac_atomic_keeps_the_old_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clip.flac"
    write_flac_atomic(path, np.full(1600, 0.25, dtype=np.float32))
    old_bytes = path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(audio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_flac_atomic(path, np.full(1600, -0.25, dtype=np.float32))

    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["clip.flac"]


# --- the samples as stored: one function, every door -------------------------------------------------


def test_to_pcm16_is_libsndfiles_own_rule_for_16_bit_flac(tmp_path: Path) -> None:
    """FLACs the lake holds from before ``to_pcm16`` were written by libsndfile from float: same numbers."""
    rng = np.random.default_rng(1)
    k = rng.integers(-40000, 40000, 50000)
    x = np.concatenate(
        [
            (k + 0.5) / 32768,  # exact halves: rounded to even
            (k + rng.uniform(-1, 1, k.size)) / 32768,
            rng.uniform(-3, 3, 5000),  # clipped
            [1.0, -1.0, 0.99999, -0.99999, 1.00001, -1.00001, 0.0, -0.0, 0.5 / 32768, 1.5 / 32768],
        ]
    ).astype(np.float32)
    path = tmp_path / "libsndfile.flac"
    sf.write(path, x, TARGET_SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    by_libsndfile, _ = sf.read(path, dtype="int16")

    np.testing.assert_array_equal(audio.to_pcm16(x), by_libsndfile)
    assert audio.to_pcm16(np.array([1.0, -1.0, 5.0, -5.0])).tolist() == [32767, -32768, 32767, -32768]
    with pytest.raises(ValueError, match="NaN"):
        audio.to_pcm16(np.array([0.0, np.inf]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-2.0, 2.0, width=32), min_size=1, max_size=200))
def test_as_stored_is_idempotent_and_on_the_16_bit_grid(values: list[float]) -> None:
    stored = audio.as_stored(np.array(values, dtype=np.float32))

    assert stored.dtype == np.float32
    np.testing.assert_array_equal(audio.as_stored(stored), stored)
    np.testing.assert_array_equal(stored * 32768, np.round(stored * 32768))
    assert stored.min() >= -1.0 and stored.max() <= 32767 / 32768


@pytest.mark.parametrize(("codec", "sample_rate", "channels"), FORMATS, ids=FORMAT_IDS)
def test_load_mono_16k_is_bit_for_bit_what_the_lake_flac_and_the_wav_hold(
    tmp_path: Path, codec: str, sample_rate: int, channels: int
) -> None:
    """The pipeline's FLAC (stream -> write_mono_16k_flac) and processed_audio.wav (write_wav_atomic) read
    back as exactly the samples load_mono_16k gives, and loading either file again changes nothing."""
    from emo_assets.lib.audio.sample_day import synth_speech

    path = path_for(tmp_path, codec)
    x = synth_speech(1.3, sample_rate, np.random.default_rng(len(codec) + sample_rate), channels=channels)
    write_encoded(path, 2.0 * x, sample_rate, codec)  # louder than full scale in places: clipping is stored too

    samples = load_mono_16k(path)
    flac = audio.write_mono_16k_flac(tmp_path / "lake.flac", audio.stream_mono_16k(path))
    wav = audio.write_wav_atomic(tmp_path / "processed_audio.wav", samples)

    assert flac.num_samples == len(samples) and flac.rms_dbfs == pytest.approx(rms_dbfs(samples), abs=1e-9)
    for stored in (flac.path, wav):
        info = sf.info(str(stored))
        assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", TARGET_SAMPLE_RATE, 1)
        read, _ = sf.read(stored, dtype="float32")
        np.testing.assert_array_equal(read, samples)
        np.testing.assert_array_equal(load_mono_16k(stored), samples)
    np.testing.assert_array_equal(np.concatenate(list(audio.stream_mono_16k(path))), samples)


def test_load_mono_16k_differs_from_the_float_resample_only_by_16_bit_rounding(tmp_path: Path) -> None:
    """What the model heard before samples were stored: the float resample. The two differ, by at most half
    a 16-bit step (the reason one function must decide what the model hears)."""
    path = write_encoded(tmp_path / "float.wav", 0.3 * np.sin(np.arange(48000) / 7.0), 48000, "wav_float")

    floats = to_mono_16k(*decode_audio(path))
    stored = load_mono_16k(path)

    assert len(floats) == len(stored)
    assert 0 < np.abs(floats - stored).max() <= 0.5 / 32768 + 1e-9


def test_flac_reader_reads_any_window_of_a_resampled_flac(tmp_path: Path) -> None:
    samples = (np.sin(2 * np.pi * 300 * np.arange(40_000) / TARGET_SAMPLE_RATE) * 0.5).astype(np.float32)
    path = write_mono_16k_flac(tmp_path / "day" / "a.flac", [samples[:15_000], samples[15_000:]]).path
    reader = FlacReader(path)
    assert reader.num_samples == 40_000
    whole, _ = sf.read(path, dtype="float32")
    for offset, n in [(0, 40_000), (0, 400), (12_345, 10_000), (39_000, 1_000)]:
        window = reader.read(offset, n)
        assert window.dtype == np.float32 and window.shape == (n,)
        np.testing.assert_array_equal(window, whole[offset : offset + n])
    with pytest.raises(AudioDecodeError, match="changed while read"):
        reader.read(39_000, 2_000)  # past the end


def test_flac_reader_refuses_what_is_not_a_16k_mono_flac(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, np.zeros((16_000, 2), np.float32), TARGET_SAMPLE_RATE, format="FLAC")
    with pytest.raises(AudioDecodeError, match="expected 16000 Hz mono"):
        FlacReader(stereo)
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"not a flac at all")
    with pytest.raises(AudioDecodeError, match="not a readable FLAC"):
        FlacReader(junk)
    with pytest.raises(FileNotFoundError):
        FlacReader(tmp_path / "gone.flac")
