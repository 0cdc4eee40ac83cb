"""Scoring a day from readers the caller builds: rows, segments, reuse, quarantine, frames."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from emo_assets.lib.model.loading import load_model
from emo_assets.lib.model.scorer import ArrayReader
from emo_assets.lib.model.scoring import frame_batches, score_day
from emo_assets.lib.model.settings import ModelSettings
from emo_assets.lib.model.windows import plan_windows
from emo_assets.lib.schemas import EMOTION_LABELS, SAMPLE_RATE

DAY = "2026-11-20"


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(ModelSettings(str(tiny_model_dir), device="cpu", window_s=2.0, window_overlap_s=0.5))


@pytest.fixture(scope="module")
def recordings():
    rng = np.random.default_rng(7)
    return {
        "a": (rng.standard_normal(SAMPLE_RATE) * 0.1).astype(np.float32),  # 1 s: one window
        "b": (rng.standard_normal(5 * SAMPLE_RATE + 31) * 0.1).astype(np.float32),  # 5 s: windowed
        "short": np.zeros(100, np.float32),
        "gone": None,
    }


def _tables(recordings):
    ids = sorted(recordings)
    resampled = pa.table({"audio_id": ids, "path": [f"/day/{a}.flac" for a in ids]})
    audio_files = pa.table({"audio_id": ids, "source_path": [f"{DAY}/{a}.wav" for a in ids]})

    def open_audio(path: str) -> ArrayReader:
        samples = recordings[path.rsplit("/", 1)[1].removesuffix(".flac")]
        if samples is None:
            raise FileNotFoundError(f"{path}: no such file")
        return ArrayReader(samples)

    return resampled, audio_files, open_audio


def test_a_day_is_scored_from_readers_and_bad_recordings_are_quarantined(model, recordings):
    resampled, audio_files, open_audio = _tables(recordings)
    out = score_day(resampled, audio_files, model, DAY, open_audio=open_audio, batch_size=1)
    assert out.scores.column("audio_id").to_pylist() == ["a", "b"] and out.inferred == 2
    expected = model.infer([recordings["a"], recordings["b"]])
    for row, result in zip(out.scores.to_pylist(), expected, strict=True):
        np.testing.assert_allclose([row[label] for label in EMOTION_LABELS], result.scores, atol=1e-7)
        assert row["emotion"] == result.emotion
    segments = out.segments.to_pylist()
    assert [s["audio_id"] for s in segments].count("a") == 1
    assert [(s["start_s"], s["end_s"]) for s in segments if s["audio_id"] == "b"] == [
        (s.start_s, s.end_s) for s in expected[1].segments
    ]
    assert len(expected[1].segments) == len(plan_windows(len(recordings["b"]), window_s=2.0, overlap_s=0.5)) > 1
    reasons = {r["audio_id"]: r["reason"] for r in out.rejects.to_pylist()}
    assert reasons["short"].startswith("too short: 100 samples")
    assert reasons["gone"].startswith("resampled audio unreadable:") and "no such file" in reasons["gone"]


def test_a_rerun_reuses_the_earlier_results(model, recordings):
    resampled, audio_files, open_audio = _tables(recordings)
    first = score_day(resampled, audio_files, model, DAY, open_audio=open_audio)
    again = score_day(
        resampled,
        audio_files,
        model,
        DAY,
        open_audio=open_audio,
        previous_scores=first.scores,
        previous_embeddings=first.embeddings,
        previous_segments=first.segments,
    )
    assert (again.reused, again.inferred) == (2, 0)
    assert again.scores.equals(first.scores) and again.segments.equals(first.segments)


def test_frames_come_window_by_window_and_stitch_into_one_track(model, recordings):
    resampled, _, open_audio = _tables(recordings)
    batches = list(frame_batches(model, resampled, DAY, ["a", "b"], open_audio=open_audio))
    assert len(batches) == 1 + len(plan_windows(len(recordings["b"]), window_s=2.0, overlap_s=0.5))  # one per window
    frames = pa.Table.from_batches(batches)
    for audio_id in ("a", "b"):
        rows = frames.filter(pc.equal(frames["audio_id"], audio_id))
        whole = model.infer_frames(recordings[audio_id])
        assert rows.column("frame").to_pylist() == list(range(len(whole.times_s)))
        np.testing.assert_allclose(rows.column("start_s").to_numpy(), whole.times_s)
        np.testing.assert_allclose(np.stack(rows.column("embedding").to_numpy(zero_copy_only=False)), whole.embeddings)
