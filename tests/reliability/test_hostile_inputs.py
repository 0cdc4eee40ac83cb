"""Hostile and broken input: every file ends processed or quarantined with a clear reason, nothing
outside data/raw is read, names are stored verbatim and never executed, no input breaks a stage."""

import datetime as dt
import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emo_assets.lib.audio import raw_scan
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.audio.load import AudioDecodeError, load_mono_16k, probe_audio
from emo_assets.lib.audio.resample import resample_day
from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.audio.spoken import spoken_speech
from emo_assets.lib.store import lake, warehouse

DAY = "2026-11-20"

NASTY_NAMES = (
    'it\'s "quoted".wav',
    "with  spaces .wav",
    "ünïcødé 音声 😀.wav",
    "new\nline.wav",
    "x'); DROP TABLE emotion_scores;--.wav",
    'y"; DELETE FROM audio_files; --.wav',
)

# file (relative to the day) -> a word its quarantine reason must contain
QUARANTINED = {
    "empty.wav": "empty",
    "truncated.mp3": "truncated",
    "text named.wav": "not an audio file",
    "header_only.wav": "truncated",
    "image.mp3": "not an audio file",
    "clip_10ms.wav": "too short",
    "nan_inf.wav": "non-finite",
    "outside.wav": "outside data/raw",
    "unreadable.wav": "unreadable",
    "silence.wav": "no speech",  # resampled (is_silent), then refused by the voice-activity model
}
PROCESSED = (
    "mulaw_8k.wav",
    "pcm_24bit.wav",
    "float32.wav",
    "stereo_44k.wav",
    "voice.opus",
    "album.wav/inside.wav",
    "a.wav",
    "copy of a.wav",
    *NASTY_NAMES,
)


def _speech(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    return spoken_speech(seconds, rate, np.random.default_rng(seed), channels=channels)


def _write_hostile_day(day_dir: Path, outside_dir: Path) -> Path:
    day_dir.mkdir(parents=True)
    (day_dir / "empty.wav").write_bytes(b"")
    mp3 = write_encoded(day_dir / "truncated.mp3", _speech(3.0, 44100, 1), 44100, "mp3").read_bytes()
    (day_dir / "truncated.mp3").write_bytes(mp3[: len(mp3) * 2 // 5])
    (day_dir / "text named.wav").write_text("RIFF? no: just a text file that says hello\n")
    wav = write_encoded(day_dir / "header_only.wav", _speech(2.0, 16000, 2), 16000, "wav_pcm_16").read_bytes()
    (day_dir / "header_only.wav").write_bytes(wav[:44])
    (day_dir / "image.mp3").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    write_encoded(day_dir / "clip_10ms.wav", _speech(0.01, 16000, 3), 16000, "wav_pcm_16")
    bad = _speech(1.0, 16000, 4)[0].copy()
    bad[100], bad[200] = np.nan, np.inf
    sf.write(day_dir / "nan_inf.wav", bad, 16000, subtype="FLOAT")
    write_encoded(day_dir / "silence.wav", np.zeros(32000, np.float32), 16000, "wav_pcm_16")
    write_encoded(day_dir / "mulaw_8k.wav", _speech(1.5, 8000, 5), 8000, "wav_ulaw")
    write_encoded(day_dir / "pcm_24bit.wav", _speech(1.5, 48000, 6), 48000, "wav_pcm_24")
    write_encoded(day_dir / "float32.wav", _speech(1.5, 22050, 7), 22050, "wav_float")
    write_encoded(day_dir / "stereo_44k.wav", _speech(1.5, 44100, 8, channels=2), 44100, "wav_pcm_16")
    write_encoded(day_dir / "voice.opus", _speech(1.5, 48000, 9), 48000, "opus")
    write_encoded(day_dir / "album.wav" / "inside.wav", _speech(1.2, 16000, 10), 16000, "wav_pcm_16")
    write_encoded(day_dir / "a.wav", _speech(1.2, 16000, 11), 16000, "wav_pcm_16")
    (day_dir / "copy of a.wav").write_bytes((day_dir / "a.wav").read_bytes())
    for i, name in enumerate(NASTY_NAMES):
        write_encoded(day_dir / name, _speech(1.0, 16000, 20 + i), 16000, "wav_pcm_16")
    secret = write_encoded(outside_dir / "secret.wav", _speech(1.0, 16000, 99), 16000, "wav_pcm_16")
    (day_dir / "outside.wav").symlink_to(secret)
    unreadable = write_encoded(day_dir / "unreadable.wav", _speech(1.0, 16000, 98), 16000, "wav_pcm_16")
    unreadable.chmod(0)
    return secret


@pytest.fixture(scope="module")
def hostile_day(tmp_path_factory, tiny_model_dir, rel):
    data_dir = tmp_path_factory.mktemp("hostile")
    secret = _write_hostile_day(data_dir / "raw" / DAY, tmp_path_factory.mktemp("outside"))
    unreadable = str(data_dir / "raw" / DAY / "unreadable.wav")
    with pytest.MonkeyPatch.context() as mp:
        if os.geteuid() == 0:  # root reads any file: make the permission check see what a user would
            real_access = os.access
            mp.setattr(raw_scan.os, "access", lambda p, mode, **kw: str(p) != unreadable and real_access(p, mode, **kw))
        result = rel.materialize(data_dir, tiny_model_dir)
    assert result.success, rel.step_failure_messages(result)
    return data_dir, result, secret


def _query(data_dir: Path, sql: str, params=()) -> list[tuple]:
    con = warehouse.open_read_copy(data_dir)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_every_hostile_file_is_processed_or_quarantined_with_its_reason(hostile_day):
    data_dir, result, _ = hostile_day
    processed = {
        src.removeprefix(f"{DAY}/")
        for (src,) in _query(
            data_dir, "SELECT f.source_path FROM audio_files f JOIN emotion_scores s USING (audio_id, date)"
        )
    }
    quarantined = dict(_query(data_dir, "SELECT source_path, reason FROM quarantine"))
    quarantined = {src.removeprefix(f"{DAY}/"): reason for src, reason in quarantined.items()}
    assert processed == set(PROCESSED)
    assert set(quarantined) == set(QUARANTINED)
    for name, word in QUARANTINED.items():
        assert word in quarantined[name], (name, quarantined[name])
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_formats_silence_and_identical_copies(hostile_day):
    data_dir, _, _ = hostile_day
    rows = {
        src.removeprefix(f"{DAY}/"): (audio_id, fmt, rate, channels, silent, duration)
        for src, audio_id, fmt, rate, channels, silent, duration in _query(
            data_dir,
            "SELECT f.source_path, f.audio_id, f.format, f.sample_rate, f.channels, r.is_silent, r.duration_s "
            "FROM audio_files f JOIN resampled_audio r USING (audio_id, date)",
        )
    }
    assert rows["silence.wav"][4] is True
    assert [n for n, r in rows.items() if r[4]] == ["silence.wav"]
    assert rows["mulaw_8k.wav"][1:4] == ("wav", 8000, 1)
    assert rows["stereo_44k.wav"][1:4] == ("wav", 44100, 2)
    assert rows["voice.opus"][1] == "opus"
    assert rows["pcm_24bit.wav"][5] == pytest.approx(1.5, abs=1e-3)
    assert rows["a.wav"][0] == rows["copy of a.wav"][0]  # same bytes, same audio_id, two rows
    assert "album.wav" not in rows  # a directory is walked, not a file


def test_symlink_outside_raw_is_never_read(hostile_day):
    data_dir, _, secret = hostile_day
    secret_id = hashlib.sha256(secret.read_bytes()).hexdigest()
    for table in ("audio_files", "resampled_audio", "emotion_scores", "quarantine"):
        assert _query(data_dir, f"SELECT count(*) FROM {table} WHERE audio_id = ?", [secret_id]) == [(0,)]
    assert not list((data_dir / "resampled").rglob(f"{secret_id}*"))


def test_hostile_names_are_stored_verbatim_and_never_executed(hostile_day):
    data_dir, _, _ = hostile_day
    for name in NASTY_NAMES:
        assert _query(data_dir, "SELECT count(*) FROM audio_files WHERE source_path = ?", [f"{DAY}/{name}"]) == [(1,)]
    tables = {t for (t,) in _query(data_dir, "SELECT table_name FROM information_schema.tables")}
    assert {"emotion_scores", "audio_files", "emotion_clusters", "daily_emotion_summary"} <= tables
    scored = _query(data_dir, "SELECT count(*) FROM audio_files JOIN emotion_scores USING (audio_id, date)")
    assert scored == [(len(PROCESSED),)]


def test_the_resample_stage_in_other_processes_writes_the_same_flacs_and_reasons(hostile_day, tmp_path):
    """The pool a day is resampled in (threads here, processes, Ray CPU tasks on a cluster) changes
    nothing: the same rows, the same FLAC bytes, the same quarantine reasons, each exception having
    crossed back from the process that raised it."""
    data_dir, _, _ = hostile_day
    landed = lake.read_partition(data_dir / "lake", "audio_files", DAY)
    raw_root = data_dir / "raw"
    threads = resample_day(landed, raw_root, tmp_path / "threads" / DAY, DAY, workers=2, data_root=tmp_path / "threads")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        spawned = resample_day(
            landed, raw_root, tmp_path / "spawned" / DAY, DAY, data_root=tmp_path / "spawned", pool=pool
        )
    reasons = dict(zip(spawned.rejects.column("source_path").to_pylist(), spawned.rejects.column("reason").to_pylist()))
    assert reasons[f"{DAY}/truncated.mp3"].startswith("truncated")  # an AudioDecodeError, pickled back whole
    assert spawned.rejects.equals(threads.rejects)
    assert spawned.rows.equals(threads.rows) and spawned.rows.num_rows == len(PROCESSED) + 1  # and silence.wav
    flacs = sorted(p.name for p in (tmp_path / "threads" / DAY).glob("*.flac"))
    assert flacs == sorted(p.name for p in (tmp_path / "spawned" / DAY).glob("*.flac")) and flacs
    for name in flacs:
        assert (tmp_path / "spawned" / DAY / name).read_bytes() == (tmp_path / "threads" / DAY / name).read_bytes()


AUDIO_SUFFIXES = sorted(raw_scan.AUDIO_EXTENSIONS)
MAGICS = [
    b"",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    b"fLaC",
    b"OggS\x00\x02",
    b"ID3\x03\x00",
    b"\xff\xfb\x90",
    b"\x00\x00\x00\x20ftypM4A ",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    magic=st.sampled_from(MAGICS),
    body=st.binary(max_size=4096),
    suffix=st.sampled_from(AUDIO_SUFFIXES),
)
def test_random_bytes_never_raise_out_of_the_decode_stages(tmp_path, magic, body, suffix):
    raw_root = tmp_path / "raw"
    day_dir = raw_root / DAY
    day_dir.mkdir(parents=True, exist_ok=True)
    for old in day_dir.iterdir():
        old.unlink()
    path = day_dir / f"fuzz{suffix}"
    path.write_bytes(magic + body)
    for decode in (probe_audio, load_mono_16k):
        try:
            decode(path)
        except AudioDecodeError as exc:
            assert exc.reason
    ingested = ingest_day(raw_root, DAY, ingested_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert ingested.rows.num_rows + ingested.rejects.num_rows == 1
    out = resample_day(ingested.rows, raw_root, tmp_path / "resampled", DAY, workers=1)
    assert out.rows.num_rows + out.rejects.num_rows == ingested.rows.num_rows
    assert all(r for r in out.rejects.column("reason").to_pylist())
    assert isinstance(out.rows, pa.Table)
    assert list((tmp_path / "resampled").glob(".*.tmp")) == []
