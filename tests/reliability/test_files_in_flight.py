"""Files still being written when a day runs: deferred (never scored half-written, never
quarantined for being in flight), accounted for as deferred, and taken by the next run; the
sensor, the asset graph and `emo run` apply the same settle rule (EMO_SETTLE_S)."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import wave
from pathlib import Path

import dagster as dg
import numpy as np

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.cli import main
from emo_assets.definitions import build_definitions
from emo_assets.lib.audio.ingest import ingest_day
from emo_assets.lib.audio.spoken import spoken_speech
from emo_assets.lib.store import lake
from emo_assets.lib.store.deferred import deferred_paths, write_deferred
from emo_assets.resources import EmotionModelResource, RayResource, StorageResource
from tests.helpers import DAY, schedule_tick, write_small_day

SETTLE_S = 1.0
LIVE = f"{DAY}/live.wav"


class Recorder(threading.Thread):
    """A recorder that writes 16 kHz PCM of someone speaking in 50 ms flushes, each leaving a valid
    WAV header (``wave`` patches the sizes after every write), until stopped."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.frames, self._stop_event = path, 0, threading.Event()

    def run(self) -> None:
        speech = np.round(spoken_speech(20.0, 16000, 0)[0] * 32767).astype("<i2")
        with open(self.path, "wb", buffering=0) as raw, wave.open(raw, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            while not self._stop_event.is_set():
                at = self.frames % (len(speech) - 800)
                chunk = speech[at : at + 800]
                out.writeframes(chunk.tobytes())
                self.frames += len(chunk)
                time.sleep(0.05)

    def stop(self) -> float:
        """Stop and return the seconds recorded."""
        self._stop_event.set()
        self.join()
        return self.frames / 16000

    def wait_for(self, seconds: float) -> None:
        while self.frames < seconds * 16000:
            time.sleep(0.02)


def _settled_day(day_dir: Path) -> None:
    """Files that landed an hour ago."""
    write_small_day(day_dir)
    old = time.time() - 3600
    for path in day_dir.iterdir():
        os.utime(path, (old, old))


def _resources(data_dir: Path, model_dir: Path) -> dict:
    return {
        "storage": StorageResource(data_dir=str(data_dir), settle_s=SETTLE_S),
        "emotion_model": EmotionModelResource(model=str(model_dir), device="cpu"),
        "ray": RayResource(),
    }


def _run(data_dir: Path, model_dir: Path):
    result = dg.materialize(
        [*all_assets(), *all_checks], partition_key=DAY, resources=_resources(data_dir, model_dir), raise_on_error=False
    )
    assert result.success
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "every_file_accounted_for"]
    return result, check


def _sensor_tick(data_dir: Path, model_dir: Path, cursor: str | None):
    defs = build_definitions(_resources(data_dir, model_dir))
    sensor = defs.get_sensor_def("raw_files_sensor")
    with dg.build_sensor_context(cursor=cursor, resources=_resources(data_dir, model_dir), definitions=defs) as ctx:
        return sensor.evaluate_tick(ctx)


def test_a_recording_being_written_is_deferred_then_processed_by_the_next_run(tmp_path, tiny_model_dir):
    day_dir = tmp_path / "raw" / DAY
    _settled_day(day_dir)  # 3 recordings and notes.wav (quarantined), landed earlier
    recorder = Recorder(day_dir / "live.wav")
    recorder.start()
    try:
        recorder.wait_for(0.3)
        first_tick = _sensor_tick(tmp_path, tiny_model_dir, None)
        # the files that landed earlier are run at once; the recording is left out
        assert [r.partition_key for r in first_tick.run_requests] == [DAY]
        result, check = _run(tmp_path, tiny_model_dir)
        recording_during_the_run = recorder.frames / 16000
        # still recording: the sensor sees nothing new (the file is not yet part of the day)
        assert _sensor_tick(tmp_path, tiny_model_dir, first_tick.cursor).run_requests == []
    finally:
        seconds = recorder.stop()
    assert recording_during_the_run > 0.3
    audio_files = lake.read_partition(tmp_path / "lake", "audio_files", DAY)
    quarantine = lake.read_partition(tmp_path / "lake", "quarantine", DAY)
    assert LIVE not in audio_files.column("source_path").to_pylist()  # never scored half-written
    assert quarantine.column("source_path").to_pylist() == [f"{DAY}/notes.wav"]  # nor quarantined
    assert lake.read_partition(tmp_path / "lake", "emotion_scores", DAY).num_rows == 3
    assert deferred_paths(tmp_path / "lake", DAY) == [LIVE]
    # accounted for as deferred, named, not missing: the check passes
    assert check.passed
    assert check.metadata["deferred"].value == [LIVE]
    assert check.metadata["missing"].value == []
    meta = result.asset_materializations_for_node("audio_files")[0].metadata
    assert meta["deferred"].value == [LIVE]

    # the recording ends; once it has rested SETTLE_S the sensor's fingerprint changes
    time.sleep(SETTLE_S + 0.2)
    second_tick = _sensor_tick(tmp_path, tiny_model_dir, first_tick.cursor)
    assert [r.partition_key for r in second_tick.run_requests] == [DAY]
    result, check = _run(tmp_path, tiny_model_dir)
    audio_files = lake.read_partition(tmp_path / "lake", "audio_files", DAY).to_pylist()
    (live,) = [row for row in audio_files if row["source_path"] == LIVE]
    assert abs(live["duration_s"] - seconds) < 1e-6  # the whole recording, not the part seen mid-write
    assert lake.read_partition(tmp_path / "lake", "emotion_scores", DAY).num_rows == 4
    assert deferred_paths(tmp_path / "lake", DAY) == []
    assert check.passed and check.metadata["deferred"].value == []


def test_emo_run_waits_for_a_file_that_settles_then_processes_it(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("EMO_SETTLE_S", str(SETTLE_S))
    day_dir = tmp_path / "raw" / DAY
    _settled_day(day_dir)
    os.utime(day_dir / "call_01.wav")  # just copied in: younger than the settle time
    code = main(["run", "--date", DAY, "--data-dir", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"])
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert (
        f"waiting up to 6 s for 1 file(s) still being written (modified in the last 1 s, EMO_SETTLE_S): {DAY}/call_01.wav"
        in out
    )
    assert "  settled after " in out
    assert "  processed        3\n" in out and "  deferred         0\n" in out
    assert deferred_paths(tmp_path / "lake", DAY) == []


def test_emo_run_waits_a_bounded_time_then_defers_a_file_still_being_written(
    tmp_path, tiny_model_dir, capsys, monkeypatch
):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("EMO_SETTLE_S", str(SETTLE_S))
    day_dir = tmp_path / "raw" / DAY
    _settled_day(day_dir)
    recorder = Recorder(day_dir / "live.wav")
    recorder.start()
    started = time.monotonic()
    try:
        recorder.wait_for(0.1)
        code = main(
            ["run", "--date", DAY, "--data-dir", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"]
        )
    finally:
        recorder.stop()
    out, _ = capsys.readouterr()
    assert code == 0, out
    assert time.monotonic() - started >= 6 * SETTLE_S  # it waited the whole bound
    assert f"  still being written after 6 s: 1 file(s) deferred to the next run: {LIVE}" in out
    assert "  deferred         1  (still being written: the next run takes them)\n" in out
    assert f"    {LIVE}\n" in out
    assert "  processed        3\n" in out and "  unaccounted      0\n" in out
    assert deferred_paths(tmp_path / "lake", DAY) == [LIVE]


def test_the_schedule_runs_again_a_day_whose_last_run_deferred_files(tmp_path, tiny_model_dir):
    day_dir = tmp_path / "raw" / DAY
    _settled_day(day_dir)
    (day_dir / "live.wav").write_bytes((day_dir / "call_00.wav").read_bytes())  # just landed
    out = ingest_day(tmp_path / "raw", DAY, dt.datetime.now(dt.UTC), settle_s=SETTLE_S)  # as the day's run did
    write_deferred(tmp_path / "lake", DAY, out.deferred)
    defs = build_definitions(_resources(tmp_path, tiny_model_dir))
    requests = schedule_tick(
        defs, _resources(tmp_path, tiny_model_dir), dt.datetime(2026, 11, 25, 0, 30, tzinfo=dt.UTC)
    )
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("2026-11-24", "schedule:2026-11-24"),
        (DAY, f"schedule:{DAY}:deferred:2026-11-25"),
    ]
    write_deferred(tmp_path / "lake", DAY, out.deferred.slice(0, 0))  # the next run took it
    requests = schedule_tick(
        defs, _resources(tmp_path, tiny_model_dir), dt.datetime(2026, 11, 26, 0, 30, tzinfo=dt.UTC)
    )
    assert [r.partition_key for r in requests] == ["2026-11-25"]
