"""Speech turns found by silero-vad on real speech (espeak-ng) joined by silences of known length."""

import numpy as np
import pytest

from emo_assets.lib.audio.turns import FRAME_SAMPLES, Turn, find_turns, turns_from_probabilities
from emo_assets.lib.model.scorer import ArrayReader
from tests.helpers import SENTENCES, espeak, spoken_with_pauses


@pytest.fixture(scope="module")
def call():
    return spoken_with_pauses(SENTENCES, pauses_s=(1.5, 2.0), lead_s=1.0, tail_s=1.2)


def test_turns_match_the_sentences_within_a_third_of_a_second(call):
    samples, spans = call
    turns = find_turns(ArrayReader(samples))
    assert len(turns) == len(spans), [(t.start_s, t.end_s) for t in turns]
    for turn, (start, end) in zip(turns, spans, strict=True):
        assert abs(turn.start_s - start) <= 0.3, (turn, start)
        assert abs(turn.end_s - end) <= 0.3, (turn, end)
        assert 0.5 <= turn.speech_share <= 1.0


@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-rp"])
def test_a_pause_shorter_than_the_rule_stays_inside_one_turn(voice):
    first, second = espeak(SENTENCES[0], voice), espeak(SENTENCES[1], voice)
    pause = np.zeros(int(0.2 * 16000), np.float32)
    lead = np.zeros(16000, np.float32)
    samples = np.concatenate([lead, first, pause, second, lead])
    turns = find_turns(ArrayReader(samples))
    assert len(turns) == 1
    assert abs(turns[0].start_s - 1.0) <= 0.3
    assert abs(turns[0].end_s - (len(samples) - 16000) / 16000) <= 0.3


@pytest.mark.parametrize(
    "samples",
    [
        np.zeros(5 * 16000, np.float32),
        np.random.default_rng(0).normal(0, 1e-4, 5 * 16000).astype(np.float32),  # faint hiss
        (0.3 * np.sin(2 * np.pi * 1000 * np.arange(3 * 16000) / 16000)).astype(np.float32),  # a steady tone
    ],
    ids=["digital-silence", "hiss", "tone"],
)
def test_no_speech_gives_no_turn(samples):
    assert find_turns(ArrayReader(samples)) == []


def test_speech_share_counts_the_frames_heard_as_speech():
    probs = np.array([0.0] * 10 + [0.9] * 20 + [0.2] * 5 + [0.9] * 20 + [0.0] * 40, np.float32)
    (turn,) = turns_from_probabilities(probs, len(probs) * FRAME_SAMPLES, min_silence_s=0.5, pad_s=0.0)
    assert turn == Turn(10 * FRAME_SAMPLES, 55 * FRAME_SAMPLES, pytest.approx(40 / 45))
