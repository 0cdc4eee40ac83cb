"""The demo day: deterministic, in every format, real speech where a voice-activity model looks for it,
two voices on the two sides of its calls, and all of it decodable except the broken upload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emo_assets.lib.audio import spoken
from emo_assets.lib.audio.decode import decode_audio
from emo_assets.lib.audio.load import AudioDecodeError, load_mono_16k, probe_audio, rms_dbfs
from emo_assets.lib.audio.raw_scan import scan_day
from emo_assets.lib.audio.sample_day import (
    BROKEN_SAMPLE,
    CHANNELS_CONFIG,
    CODEC_FORMAT,
    NO_SPEECH_SAMPLE,
    SAMPLE_DAY,
    SPOKEN,
    synth_speech,
    write_encoded,
    write_sample_day,
)
from emo_assets.lib.audio.turns import find_turns
from emo_assets.lib.model.scorer import ArrayReader

DAY = "2026-11-24"


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_sample_day(root / DAY, seed=0)
    return root


def test_sample_day_is_byte_deterministic(sample_root: Path, tmp_path: Path) -> None:
    again = write_sample_day(tmp_path / DAY, seed=0)

    first = sorted(p for p in (sample_root / DAY).rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path / DAY) for p in again] == [p.relative_to(sample_root / DAY) for p in first]
    for a, b in zip(first, again):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_sample_day_covers_every_promised_format(sample_root: Path) -> None:
    formats = {probe_audio(sample_root / DAY / rec.name).format for rec in SAMPLE_DAY}
    codecs = {rec.codec for rec in SAMPLE_DAY}

    assert formats == {"wav", "flac", "mp3", "aac", "opus", "vorbis"}
    assert {"wav_pcm_16", "wav_ulaw", "wav_float"} <= codecs
    assert any(rec.channels == 2 and rec.sample_rate == 44100 and rec.codec == "wav_pcm_16" for rec in SAMPLE_DAY)
    assert 8 <= len(SAMPLE_DAY) and all(2.0 <= rec.seconds <= 16.0 for rec in SAMPLE_DAY)


@pytest.mark.parametrize("rec", SPOKEN, ids=[rec.name for rec in SPOKEN])
def test_each_sample_decodes_to_speech(sample_root: Path, rec) -> None:
    path = sample_root / DAY / rec.name

    info = probe_audio(path)
    mono = load_mono_16k(path)

    assert (info.format, info.sample_rate, info.channels) == (CODEC_FORMAT[rec.codec], rec.sample_rate, rec.channels)
    assert len(mono) == pytest.approx(rec.seconds * 16000, abs=80)
    assert -36.0 < rms_dbfs(mono) < -6.0  # a call's two sides, one speaking at a time, are halved in the mix
    # Speech has pauses: a good share of 20 ms frames is far quieter than the loudest ones.
    frames = mono[: len(mono) // 320 * 320].reshape(-1, 320)
    frame_db = np.array([rms_dbfs(f) for f in frames])
    assert np.mean(frame_db < frame_db.max() - 30.0) > 0.1
    # real speech: the voice-activity model finds its sentences
    assert find_turns(ArrayReader(mono)) != []


def test_the_line_noise_holds_no_speech(sample_root: Path) -> None:
    mono = load_mono_16k(sample_root / DAY / NO_SPEECH_SAMPLE)
    assert rms_dbfs(mono) > -45.0  # not silence: hum and hiss a level meter would call sound
    assert find_turns(ArrayReader(mono)) == []


def test_each_call_has_the_agent_on_the_left_and_the_customer_on_the_right(sample_root: Path) -> None:
    calls = [rec for rec in SAMPLE_DAY if rec.speech == "call"]
    assert len(calls) >= 2 and all(rec.name.startswith("calls/") for rec in calls)
    assert (sample_root / DAY / CHANNELS_CONFIG).read_text() == '[channels]\nagent = "left"\ncustomer = "right"\n'
    for rec in calls:
        samples, rate = decode_audio(sample_root / DAY / rec.name)
        left, right = (find_turns(ArrayReader(load_16k(side, rate))) for side in samples)
        assert left and right, rec.name
        # they take turns: no turn of one side lies inside a turn of the other
        for a in left:
            assert all(b.end <= a.start + 8000 or b.start >= a.end - 8000 for b in right), rec.name


def load_16k(side: np.ndarray, rate: int) -> np.ndarray:
    from emo_assets.lib.audio.load import to_mono_16k

    return to_mono_16k(side, rate)


def test_without_espeak_ng_the_day_is_refused_with_the_install_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spoken.shutil, "which", lambda name: None)
    spoken._espeak.cache_clear()
    try:
        with pytest.raises(spoken.SpeechSynthesisError, match="apt-get install espeak-ng"):
            write_sample_day(tmp_path / DAY, seed=0)
    finally:
        spoken._espeak.cache_clear()
    assert not (tmp_path / DAY).exists()  # nothing half-written


def test_broken_upload_is_quarantined_not_crashing(sample_root: Path) -> None:
    with pytest.raises(AudioDecodeError) as broken:
        load_mono_16k(sample_root / DAY / BROKEN_SAMPLE)
    assert broken.value.reason.startswith("not an audio file")


def test_sample_day_scans_cleanly(sample_root: Path) -> None:
    files, refused = scan_day(sample_root, DAY)

    assert [f.source_path for f in files] == sorted(
        f"{DAY}/{name}" for name in [rec.name for rec in SAMPLE_DAY] + [BROKEN_SAMPLE]
    )
    assert refused == []


def test_seeds_change_the_recordings(tmp_path: Path) -> None:
    a = synth_speech(1.0, 16000, 1)
    b = synth_speech(1.0, 16000, 2)

    assert a.shape == b.shape == (1, 16000) and a.dtype == np.float32
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, synth_speech(1.0, 16000, 1))
    assert np.abs(a).max() == pytest.approx(0.6, abs=1e-6)


def test_synth_speech_stays_below_nyquist_at_8k() -> None:
    x = synth_speech(1.0, 8000, 3)[0]
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)

    assert spectrum[freqs > 3700].sum() < 0.05 * spectrum.sum()


def test_ogg_files_carry_the_fixed_serial_number(tmp_path: Path) -> None:
    for codec in ("opus", "vorbis"):
        path = write_encoded(tmp_path / f"x.{codec}", np.zeros(4800), 48000, codec)
        data = path.read_bytes()
        serials = {data[i + 14 : i + 18] for i in range(len(data) - 18) if data[i : i + 4] == b"OggS"}
        assert serials == {(0x656D6F31).to_bytes(4, "little")}


def test_unknown_codec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown codec 'wma'"):
        write_encoded(tmp_path / "x.wma", np.zeros(10), 16000, "wma")
