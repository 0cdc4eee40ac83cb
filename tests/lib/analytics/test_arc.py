"""The emotion arc of a call, on hand-made turns with known answers."""

import dataclasses
import datetime as dt

import pyarrow as pa
import pytest

from emo_assets.lib import schemas
from emo_assets.lib.analytics.arc import ArcError, Turn, arc_rows, arc_sentence, emotion_arc, voice_arc

DAY = dt.date(2026, 11, 20)


def _scores(**named: float) -> tuple[float, ...]:
    """Nine scores: the named classes, the rest of the mass on 'other'."""
    rest = 1.0 - sum(named.values())
    return tuple(named.get(label, rest if label == "other" else 0.0) for label in schemas.EMOTION_LABELS)


# A customer who starts neutral, gets angry at turn 2 (10-16 s), is sad at turn 3 and calms down
# (neutral) at turn 4, which starts at 22 s: 12 s after the angry turn started.
CUSTOMER = [
    Turn(0, 0.0, 4.0, _scores(neutral=0.7, sad=0.1)),  # negativity 0.1
    Turn(1, 4.5, 9.0, _scores(neutral=0.5, angry=0.3)),  # 0.3
    Turn(2, 10.0, 16.0, _scores(angry=0.6, disgusted=0.2)),  # 0.8: the peak
    Turn(3, 16.5, 21.0, _scores(sad=0.5, neutral=0.3)),  # 0.5
    Turn(4, 22.0, 30.0, _scores(neutral=0.9, fearful=0.05)),  # 0.05
]


def test_arc_of_a_call_that_calms_down():
    arc = emotion_arc(CUSTOMER)
    assert arc.turns == 5
    assert arc.duration_s == 30.0
    assert (arc.start_emotion, arc.end_emotion) == ("neutral", "neutral")
    assert arc.start_negativity == pytest.approx(0.1)
    assert arc.end_negativity == pytest.approx(0.05)
    assert (arc.peak_turn, arc.peak_start_s, arc.peak_end_s, arc.peak_emotion) == (2, 10.0, 16.0, "angry")
    assert arc.peak_negativity == pytest.approx(0.8)
    assert arc.ended_calmer is True
    assert (arc.recovered, arc.recovery_turn, arc.recovery_s) == (True, 4, 12.0)
    # the order the turns come in does not matter
    assert emotion_arc(list(reversed(CUSTOMER))) == arc


def test_arc_of_a_call_that_ends_angry():
    turns = [
        Turn(0, 0.0, 3.0, _scores(happy=0.8)),
        Turn(1, 3.0, 6.0, _scores(fearful=0.6)),
        Turn(2, 6.0, 9.0, _scores(angry=0.9)),  # peak, nothing calm after it
    ]
    arc = emotion_arc(turns)
    assert (arc.start_emotion, arc.end_emotion, arc.peak_turn, arc.peak_emotion) == ("happy", "angry", 2, "angry")
    assert arc.ended_calmer is False
    assert (arc.recovered, arc.recovery_turn, arc.recovery_s) == (False, None, None)


def test_a_calm_call_has_nothing_to_recover_from_and_ties_go_to_the_earliest_turn():
    turns = [
        Turn(0, 0.0, 2.0, _scores(neutral=0.8, sad=0.2)),
        Turn(1, 2.0, 4.0, _scores(happy=0.8, sad=0.2)),
    ]
    arc = emotion_arc(turns)
    assert (arc.peak_turn, arc.peak_emotion) == (0, "neutral")  # 0.2 each: the first
    assert (arc.recovered, arc.recovery_s) == (None, None)  # the peak is not a negative emotion
    assert arc.ended_calmer is False  # equal negativity is not calmer


def test_surprise_is_not_calm():
    turns = [
        Turn(0, 0.0, 2.0, _scores(sad=0.9)),
        Turn(1, 2.0, 4.0, _scores(surprised=0.9)),
        Turn(2, 5.0, 7.0, _scores(happy=0.9)),
    ]
    arc = emotion_arc(turns)
    assert (arc.recovery_turn, arc.recovery_s) == (2, 5.0)


# Turns whose top emotion and negativity disagree: the rule is on the scores.
# A surprised peak that is mostly negative (angry + sad = 0.55), then a turn whose top emotion is
# neutral but which is not mostly calm (neutral + happy = 0.45), then a happy one.
MOSTLY_NEGATIVE_SURPRISE = [
    Turn(0, 0.0, 2.0, _scores(neutral=0.8)),
    Turn(1, 2.0, 4.0, _scores(surprised=0.45, angry=0.3, sad=0.25)),  # 0.55, top: surprised
    Turn(2, 4.0, 6.0, _scores(neutral=0.4, happy=0.05, sad=0.3, other=0.25)),  # top neutral, calmness 0.45
    Turn(3, 7.0, 9.0, _scores(happy=0.8)),
]
# The audit's call: a sad turn that is mostly calm, and a surprised peak with negativity 0.44.
SAD_BUT_MOSTLY_CALM = [
    Turn(0, 0.0, 2.0, _scores(sad=0.35, neutral=0.33, happy=0.32)),  # top sad, negativity 0.35
    Turn(1, 2.0, 4.0, _scores(surprised=0.56, angry=0.22, fearful=0.22)),  # 0.44, top surprised
]


def test_a_mostly_negative_peak_is_negative_whatever_its_top_emotion():
    arc = emotion_arc(MOSTLY_NEGATIVE_SURPRISE)
    assert (arc.peak_turn, arc.peak_emotion) == (1, "surprised")
    assert arc.peak_negativity == pytest.approx(0.55)
    # the neutral-topped turn 2 is not mostly calm: the calm turn is 3, 5 s after the peak began
    assert (arc.recovered, arc.recovery_turn, arc.recovery_s) == (True, 3, 5.0)
    assert arc_sentence(dataclasses.asdict(arc)).endswith(
        "most negative: surprised at 2.0–4.0 s (negativity 0.55), calm again 5.0 s after it started"
        " · did not end calmer"
    )


def test_a_sad_topped_turn_that_is_mostly_calm_is_not_negative():
    arc = emotion_arc(SAD_BUT_MOSTLY_CALM)
    assert (arc.start_emotion, arc.peak_turn, arc.peak_emotion) == ("sad", 1, "surprised")
    assert (arc.recovered, arc.recovery_turn, arc.recovery_s) == (None, None, None)
    assert arc.ended_calmer is False  # 0.44 after 0.35
    sentence = arc_sentence(dataclasses.asdict(arc))
    assert sentence == (
        "Arc: sad → surprised · most negative: surprised at 2.0–4.0 s (negativity 0.44), "
        "no turn more than 50% negative · did not end calmer"
    )


@pytest.mark.parametrize(
    "turns", [CUSTOMER, MOSTLY_NEGATIVE_SURPRISE, SAD_BUT_MOSTLY_CALM, [Turn(0, 0.0, 1.0, _scores(sad=0.6))]]
)
def test_recovery_is_judged_exactly_when_some_turn_is_negative(turns):
    """One rule for "negative": the arc has something to recover from exactly when a turn is
    negative, so its words can never say there was no negative turn while the arc shows one."""
    arc = emotion_arc(turns)
    assert (arc.recovered is not None) == any(t.negative for t in turns)
    assert all(not (t.negative and t.calm) for t in turns)


def test_every_voice_with_a_turn_has_an_arc():
    assert voice_arc([]) is None
    one = voice_arc([Turn(0, 1.0, 3.0, _scores(neutral=0.9))])
    assert (one.turns, one.peak_turn, one.start_emotion, one.end_emotion) == (1, 0, "neutral", "neutral")


def test_one_turn_cannot_end_calmer():
    arc = emotion_arc([Turn(0, 0.0, 5.0, _scores(angry=0.9))])
    assert arc.ended_calmer is None
    assert (arc.peak_turn, arc.recovered) == (0, False)


@pytest.mark.parametrize(
    ("turns", "words"),
    [
        ([], "no turns"),
        ([Turn(0, 0.0, 1.0, (1.0, 0.0))], "2 scores"),
        ([Turn(0, 2.0, 1.0, _scores(neutral=1.0))], "before it starts"),
    ],
)
def test_refused(turns, words):
    with pytest.raises(ArcError, match=words):
        emotion_arc(turns)


def _row(audio_id, turn, channel, start, end, scores, **extra):
    return {
        "audio_id": audio_id,
        "date": DAY,
        "model_id": "m",
        "channel": channel,
        "turn": turn,
        "start_s": start,
        "end_s": end,
        "speech_share": 1.0,
        "emotion": schemas.EMOTION_LABELS[max(range(9), key=lambda i: scores[i])],
        "confidence": max(scores),
        **dict(zip(schemas.EMOTION_LABELS, scores)),
        **extra,
    }


def test_rows_one_per_recording_and_channel():
    rows = [_row("call", t.turn, "customer", t.start_s, t.end_s, t.scores) for t in CUSTOMER]
    rows += [
        _row("call", 0, "agent", 0.5, 5.0, _scores(neutral=0.9)),
        _row("call", 1, "agent", 9.0, 12.0, _scores(happy=0.9)),
        _row("other", 0, "mono", 0.0, 3.0, _scores(sad=0.7)),
    ]
    arcs = arc_rows(pa.Table.from_pylist(rows[::-1]))  # any row order
    assert arcs.schema == schemas.CALL_EMOTION_ARC
    by_voice = {(r["audio_id"], r["channel"]): r for r in arcs.to_pylist()}
    assert sorted(by_voice) == [("call", "agent"), ("call", "customer"), ("other", "mono")]
    customer = by_voice[("call", "customer")]
    assert customer["turns"] == 5 and customer["peak_turn"] == 2 and customer["peak_start_s"] == 10.0
    assert customer["ended_calmer"] is True and customer["recovery_s"] == 12.0
    agent = by_voice[("call", "agent")]
    assert (agent["start_emotion"], agent["end_emotion"], agent["recovered"]) == ("neutral", "happy", None)
    assert by_voice[("other", "mono")]["ended_calmer"] is None
    assert arcs.column("date").to_pylist() == [DAY] * 3


def test_rows_written_before_turns_and_channels_are_one_mono_voice_in_time_order():
    rows = [_row("call", None, None, t.start_s, t.end_s, t.scores) for t in CUSTOMER]
    for r in rows:
        del r["turn"], r["channel"], r["speech_share"]
    (arc,) = arc_rows(pa.Table.from_pylist(rows[::-1])).to_pylist()
    assert arc["channel"] == schemas.MONO
    assert (arc["peak_turn"], arc["recovery_turn"]) == (2, 4)  # positions in time


def test_no_segments_no_rows():
    empty = pa.Table.from_pylist([], schema=schemas.EMOTION_SEGMENTS)
    assert arc_rows(empty).num_rows == 0
