"""Speech turns through the real assets (EMO_SEGMENTS=turns): espeak-ng sentences with pauses become
turn rows of emotion_segments; a silent recording is quarantined, not scored."""

import dagster as dg
import duckdb
import numpy as np
import pytest

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.lib import schemas
from emo_assets.lib.audio.load import write_wav_atomic
from emo_assets.lib.store import lake
from emo_assets.resources import EmotionModelResource
from tests.helpers import DAY, resources, spoken_with_pauses

SELECTION = ["audio_files", "resampled_audio", "emotion_scores", "emotion_segments", "emotion_embeddings"]


def _run(data_dir, model_dir, segments="turns"):
    res = {
        **resources(data_dir, model_dir),
        "emotion_model": EmotionModelResource(model=str(model_dir), device="cpu", segments=segments),
    }
    result = dg.materialize(
        [*all_assets(), *all_checks],
        selection=[*SELECTION, "quarantine", "lake_views"],
        partition_key=DAY,
        resources=res,
        raise_on_error=False,
    )
    assert result.success
    return result


@pytest.fixture(scope="module")
def turns_day(tmp_path_factory, tiny_model_dir):
    data_dir = tmp_path_factory.mktemp("turns")
    speech, spans = spoken_with_pauses()
    write_wav_atomic(data_dir / "raw" / DAY / "call.wav", speech)
    write_wav_atomic(data_dir / "raw" / DAY / "hold_music_off.wav", np.zeros(3 * 16000, np.float32))
    result = _run(data_dir, tiny_model_dir)
    return data_dir, spans, result


def test_each_sentence_is_a_turn_row_of_emotion_segments(turns_day):
    data_dir, spans, result = turns_day
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT turn, start_s, end_s, speech_share, channel, emotion FROM emotion_segments ORDER BY turn"
        ).fetchall()
        (scores,) = con.execute("SELECT count(*), any_value(channel) FROM emotion_scores").fetchall()
    assert [r[0] for r in rows] == list(range(len(spans)))
    for (_, start, end, share, channel, emotion), (s, e) in zip(rows, spans, strict=True):
        assert abs(start - s) <= 0.3 and abs(end - e) <= 0.3
        assert 0.5 <= share <= 1.0 and channel == "mono" and emotion in schemas.EMOTION_LABELS
    assert scores == (1, "mono")
    segments = next(
        m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == "emotion_segments"
    )
    assert segments.materialization.metadata["segments"].value == "turns"


def test_a_silent_recording_is_quarantined_as_no_speech(turns_day):
    data_dir, _, _ = turns_day
    quarantine = lake.read_partition(data_dir / "lake", "quarantine", DAY).to_pylist()
    assert [(q["source_path"], q["stage"], q["reason"]) for q in quarantine] == [
        (f"{DAY}/hold_music_off.wav", "emotion_scores", schemas.NO_SPEECH)
    ]
    assert "no speech" in quarantine[0]["reason"]
    scored = lake.read_partition(data_dir / "lake", "emotion_scores", DAY)
    assert scored.num_rows == 1  # the call only; the silence has no emotion row


def test_fixed_windows_stay_a_setting(tmp_path, tiny_model_dir):
    speech, _ = spoken_with_pauses()
    write_wav_atomic(tmp_path / "raw" / DAY / "call.wav", speech)
    write_wav_atomic(tmp_path / "raw" / DAY / "silence.wav", np.zeros(3 * 16000, np.float32))
    _run(tmp_path, tiny_model_dir, segments="windows")
    segments = lake.read_partition(tmp_path / "lake", "emotion_segments", DAY)
    assert segments.column("speech_share").null_count == segments.num_rows
    assert min(segments.column("start_s").to_pylist()) == 0.0  # windows start at the recording's start, not at speech
    assert lake.read_partition(tmp_path / "lake", "emotion_scores", DAY).num_rows == 2  # silence scored too


def test_emo_run_takes_segments_turns(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from emo_assets.cli import main

    monkeypatch.setenv("EMO_SETTLE_S", "0")
    speech, spans = spoken_with_pauses()
    write_wav_atomic(tmp_path / "raw" / DAY / "call.wav", speech)
    args = ["run", "--date", DAY, "--data-dir", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"]
    assert main([*args, "--segments", "turns"]) == 0
    segments = lake.read_partition(tmp_path / "lake", "emotion_segments", DAY)
    assert segments.column("turn").to_pylist() == list(range(len(spans)))
    assert segments.column("speech_share").null_count == 0
