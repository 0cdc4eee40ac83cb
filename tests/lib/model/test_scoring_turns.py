"""Scoring by speech turns: each turn a clip of its own, silence never scored, no speech quarantined."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from emo_assets.lib import schemas
from emo_assets.lib.audio.turns import find_turns
from emo_assets.lib.model.loading import load_model
from emo_assets.lib.model.scorer import ArrayReader
from emo_assets.lib.model.scoring import score_day
from emo_assets.lib.model.settings import ModelSettings
from emo_assets.lib.model.windows import plan_windows
from emo_assets.lib.schemas import EMOTION_LABELS, SAMPLE_RATE
from tests.helpers import spoken_with_pauses

DAY = "2026-11-20"


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    # window_s=2.5: the sentences (2-4 s) include turns longer than a window
    return load_model(ModelSettings(str(tiny_model_dir), device="cpu", window_s=2.5, window_overlap_s=0.5))


@pytest.fixture(scope="module")
def recordings():
    speech, spans = spoken_with_pauses()
    return {"call": speech, "quiet": np.zeros(4 * SAMPLE_RATE, np.float32)}, spans


def _day(recordings):
    ids = sorted(recordings)
    resampled = pa.table({"audio_id": ids, "path": [f"/day/{a}.flac" for a in ids]})
    audio_files = pa.table({"audio_id": ids, "source_path": [f"{DAY}/{a}.wav" for a in ids]})
    return resampled, audio_files, lambda path: ArrayReader(recordings[path.rsplit("/", 1)[1].removesuffix(".flac")])


def _rerun(model, resampled, audio_files, open_audio, previous, **kwargs):
    """The day scored again with ``previous``'s rows as the earlier run's."""
    return score_day(
        resampled,
        audio_files,
        model,
        DAY,
        open_audio=open_audio,
        previous_scores=previous.scores,
        previous_embeddings=previous.embeddings,
        previous_segments=previous.segments,
        **kwargs,
    )


def test_each_turn_is_scored_as_a_clip_and_the_recording_is_their_duration_weighted_mean(model, recordings):
    waves, spans = recordings
    resampled, audio_files, open_audio = _day(waves)
    out = score_day(resampled, audio_files, model, DAY, open_audio=open_audio, find_turns=find_turns)

    segments = out.segments.to_pylist()
    assert [s["turn"] for s in segments] == list(range(len(spans)))
    assert {s["channel"] for s in segments} == {"mono"}
    for seg, (start, end) in zip(segments, spans, strict=True):
        assert abs(seg["start_s"] - start) <= 0.3 and abs(seg["end_s"] - end) <= 0.3
        assert 0.5 <= seg["speech_share"] <= 1.0
    # each turn is the model's result for that clip alone (windowed when longer than window_s)
    clips = [waves["call"][round(s["start_s"] * SAMPLE_RATE) : round(s["end_s"] * SAMPLE_RATE)] for s in segments]
    assert any(len(plan_windows(len(c), window_s=2.5, overlap_s=0.5)) > 1 for c in clips)
    expected = model.infer(clips)
    for seg, result in zip(segments, expected, strict=True):
        np.testing.assert_allclose([seg[label] for label in EMOTION_LABELS], result.scores, atol=1e-6)
    weights = np.array([len(c) for c in clips], np.float64)
    mean = (weights[:, None] * np.stack([r.scores for r in expected])).sum(0) / weights.sum()
    (row,) = out.scores.to_pylist()
    np.testing.assert_allclose([row[label] for label in EMOTION_LABELS], mean, atol=1e-6)
    assert row["audio_id"] == "call" and row["channel"] == "mono"

    # silence is never scored: the quiet recording is quarantined, and says why
    (reject,) = out.rejects.to_pylist()
    assert reject["audio_id"] == "quiet" and reject["reason"] == schemas.NO_SPEECH
    assert reject["stage"] == "emotion_scores"
    assert out.embeddings.column("audio_id").to_pylist() == ["call"]


@pytest.fixture(scope="module")
def wide_model(tiny_model_dir):
    return load_model(ModelSettings(str(tiny_model_dir), device="cpu", window_s=10.0, window_overlap_s=0.5))


def test_a_rerun_with_turns_reuses_turns_but_not_fixed_windows(wide_model, recordings):
    model = wide_model
    waves, _ = recordings
    resampled, audio_files, open_audio = _day(waves)
    windows = score_day(resampled, audio_files, model, DAY, open_audio=open_audio)
    assert windows.segments.column("speech_share").null_count == windows.segments.num_rows
    turns = _rerun(model, resampled, audio_files, open_audio, windows, find_turns=find_turns)
    assert turns.reused == 0 and turns.inferred == 1  # the quiet one never reaches the model
    again = _rerun(model, resampled, audio_files, open_audio, turns, find_turns=find_turns)
    assert again.reused == 1 and again.inferred == 0
    assert again.scores.equals(turns.scores) and again.segments.equals(turns.segments)


def test_a_turn_longer_than_the_window_is_scored_again_on_a_rerun(model, recordings):
    """Its stored row cannot say which window setting cut it, so it is not reused."""
    waves, _ = recordings
    resampled, audio_files, open_audio = _day(waves)
    first = score_day(resampled, audio_files, model, DAY, open_audio=open_audio, find_turns=find_turns)
    assert max(s["end_s"] - s["start_s"] for s in first.segments.to_pylist()) > model.settings.window_s
    again = _rerun(model, resampled, audio_files, open_audio, first, find_turns=find_turns)
    assert again.reused == 0 and again.inferred == 1
    assert again.scores.equals(first.scores)


def test_a_silent_side_of_a_call_has_no_rows_and_the_call_is_scored(model, recordings):
    waves, _ = recordings
    resampled = pa.table(
        {
            "audio_id": ["call", "call"],
            "channel": ["agent", "customer"],
            "path": ["/day/call.flac", "/day/quiet.flac"],
        }
    )
    audio_files = pa.table({"audio_id": ["call"], "source_path": [f"{DAY}/call.wav"]})
    out = score_day(
        resampled,
        audio_files,
        model,
        DAY,
        open_audio=lambda p: ArrayReader(waves[p.rsplit("/", 1)[1].removesuffix(".flac")]),
        find_turns=find_turns,
    )
    assert out.scores.column("channel").to_pylist() == ["agent"]
    assert set(out.segments.column("channel").to_pylist()) == {"agent"}
    assert out.embeddings.column("channel").to_pylist() == ["agent"]
    assert out.rejects.num_rows == 0 and out.without_speech == 1


def test_frames_carry_their_channel(model, recordings):
    from emo_assets.lib.model.scoring import frame_batches

    waves, _ = recordings
    resampled = pa.table({"audio_id": ["call"], "channel": ["customer"], "path": ["/day/call.flac"]})
    batches = list(
        frame_batches(
            model,
            resampled,
            DAY,
            [("call", "customer")],
            open_audio=lambda p: ArrayReader(waves[p.rsplit("/", 1)[1].removesuffix(".flac")]),
        )
    )
    frames = pa.Table.from_batches(batches)
    assert set(frames.column("channel").to_pylist()) == {"customer"}
    assert frames.num_rows == pytest.approx(len(waves["call"]) / 320, abs=2)  # 50 frames per second, all of it


def test_a_day_written_before_channels_and_turns_is_reused_and_filled_in(wide_model, recordings):
    waves, _ = recordings
    resampled, audio_files, open_audio = _day(waves)
    now = score_day(resampled, audio_files, wide_model, DAY, open_audio=open_audio)

    def old(table: pa.Table) -> pa.Table:
        return table.drop_columns([c for c in ("channel", "turn", "speech_share") if c in table.column_names])

    again = score_day(
        resampled,
        audio_files,
        wide_model,
        DAY,
        open_audio=open_audio,
        previous_scores=old(now.scores),
        previous_embeddings=old(now.embeddings),
        previous_segments=old(now.segments),
    )
    assert again.reused == 2 and again.inferred == 0
    assert again.scores.equals(now.scores) and again.segments.equals(now.segments)
    assert again.embeddings.equals(now.embeddings)
