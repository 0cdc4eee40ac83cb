"""The settle rule on its own: age, change while read, the interactive wait, and the sensor's
fingerprint applying the same rule as a run."""

from __future__ import annotations

import datetime as dt
import os
import time

import numpy as np

from emo_assets.lib.audio import ingest, settle
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.audio.landing import day_fingerprint
from emo_assets.lib.audio.raw_scan import scan_day
from emo_assets.lib.audio.sample_day import write_encoded

DAY = "2026-11-20"
AT = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def _wav(path, seconds=1.0, age_s=3600.0):
    write_encoded(path, np.full(int(seconds * 16000), 0.1, np.float32), 16000, "wav_pcm_16")
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_a_file_younger_than_the_settle_time_is_deferred_not_scored_nor_quarantined(tmp_path):
    day_dir = tmp_path / DAY
    day_dir.mkdir()
    _wav(day_dir / "old.wav")
    _wav(day_dir / "fresh.wav", age_s=1.0)
    out = ingest_day(tmp_path, DAY, AT, settle_s=5.0)
    assert out.rows.column("source_path").to_pylist() == [f"{DAY}/old.wav"]
    assert out.rejects.num_rows == 0
    deferred = out.deferred.to_pylist()
    assert [d["source_path"] for d in deferred] == [f"{DAY}/fresh.wav"]
    assert deferred[0]["reason"].startswith("still being written: modified 1.")
    # without a settle time (the library's default) the same file is read at once
    assert ingest_day(tmp_path, DAY, AT).rows.num_rows == 2


def test_a_file_written_to_while_the_stage_reads_it_is_deferred_even_if_it_looked_settled(tmp_path, monkeypatch):
    day_dir = tmp_path / DAY
    day_dir.mkdir()
    _wav(day_dir / "a.wav")
    growing = _wav(day_dir / "b.wav", seconds=0.5)  # old mtime: by age alone it has settled
    real_probe = ingest.probe_audio

    def probe_while_the_recorder_appends(path):
        info = real_probe(path)
        if path.name == "b.wav":
            with open(growing, "ab") as f:  # the recorder writes more while we read it
                f.write(b"\0" * 3200)
        return info

    monkeypatch.setattr(ingest, "probe_audio", probe_while_the_recorder_appends)
    out = ingest_day(tmp_path, DAY, AT, settle_s=2.0)
    assert out.rows.column("source_path").to_pylist() == [f"{DAY}/a.wav"]
    assert out.rejects.num_rows == 0
    assert out.deferred.column("source_path").to_pylist() == [f"{DAY}/b.wav"]
    assert "changed while it was read" in out.deferred.column("reason")[0].as_py()


def test_a_half_copied_file_is_deferred_where_it_used_to_be_taken_for_a_recording(tmp_path):
    day_dir = tmp_path / DAY
    day_dir.mkdir()
    whole = _wav(tmp_path / "whole.wav", seconds=3.0)
    (day_dir / "half.wav").write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])  # just copied, in part
    # no settle time: the first third becomes a recording of its own (1 s of the 3 s being copied)
    assert [round(d, 1) for d in ingest_day(tmp_path, DAY, AT).rows.column("duration_s").to_pylist()] == [1.0]
    out = ingest_day(tmp_path, DAY, AT, settle_s=5.0)
    assert (out.rows.num_rows, out.rejects.num_rows) == (0, 0)
    assert out.deferred.column("source_path").to_pylist() == [f"{DAY}/half.wav"]


def test_the_sensor_fingerprint_leaves_out_exactly_the_files_a_run_defers(tmp_path):
    day_dir = tmp_path / DAY
    day_dir.mkdir()
    _wav(day_dir / "old.wav")
    now = time.time()
    before = day_fingerprint(day_dir, settle_s=5.0, now=now)
    young = _wav(day_dir / "young.wav", age_s=1.0)
    files, _ = scan_day(tmp_path, DAY)
    settled, deferred = settle.split_settled(files, 5.0, now)
    assert [f.path.name for f in settled] == ["old.wav"] and [d.path.name for d, _ in deferred] == ["young.wav"]
    assert day_fingerprint(day_dir, settle_s=5.0, now=now) == before  # in flight: not yet part of the day
    later = now + 10.0  # it settled: the fingerprint changes, so the sensor runs the day again
    assert settle.split_settled(files, 5.0, later)[1] == []
    assert day_fingerprint(day_dir, settle_s=5.0, now=later) not in (before, None)
    os.remove(day_dir / "old.wav")
    assert day_fingerprint(day_dir, settle_s=5.0, now=now) is None  # nothing settled: nothing to run
    assert young.exists()


class FakeClock:
    def __init__(self):
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_the_interactive_wait_ends_when_the_file_settles_and_says_so(tmp_path):
    day_dir = tmp_path / DAY
    day_dir.mkdir()
    clock = FakeClock()
    path = _wav(day_dir / "copying.wav", age_s=0.0)
    os.utime(path, (clock.t, clock.t))
    said: list[str] = []
    assert settle.wait_for_day(tmp_path, DAY, 2.0, said.append, clock=clock, sleep=clock.sleep) == []
    assert said[0].startswith("waiting up to 12 s for 1 file(s) still being written") and "copying.wav" in said[0]
    assert said[-1].startswith("  settled after 2.")


def test_the_interactive_wait_is_bounded_then_defers(tmp_path):
    day_dir = tmp_path / DAY
    day_dir.mkdir()
    _wav(day_dir / "done.wav")
    path = _wav(day_dir / "recording.wav", age_s=0.0)
    clock = FakeClock()
    started = clock.t

    def recorder_keeps_writing(s: float) -> None:
        clock.sleep(s)
        os.utime(path, (clock.t, clock.t))

    said: list[str] = []
    left = settle.wait_for_day(tmp_path, DAY, 1.0, said.append, clock=clock, sleep=recorder_keeps_writing)
    assert left == [f"{DAY}/recording.wav"]
    assert 6.0 <= clock.t - started < 6.6  # bounded: WAIT_FACTOR x the settle time
    assert said[-1] == f"  still being written after 6 s: 1 file(s) deferred to the next run: {DAY}/recording.wav"
