"""The emotion arc of a call: how one voice (a recording's channel) moved from its first turn to
its last, from the rows of ``emotion_segments`` (one per speech turn, or per window).

Definitions (the same valence sets as the satisfaction rule, ``satisfaction.py``):

- a turn's **negativity** is the sum of its scores of the negative classes
  ``angry + disgusted + fearful + sad`` (0..1);
- its **calmness** is the sum of its scores of the calm classes ``neutral + happy`` (0..1);
- a turn is **negative** when its negativity is more than half (``> MOST``), **calm** when its
  calmness is; a turn can be neither (``surprised``, ``other`` and ``unknown`` have no valence).
  The rule is on the scores, as the peak and ``ended_calmer`` are, never on the top emotion: the
  peak is the most negative turn, so a call has a negative turn exactly when its peak is one, and
  no door can say "no negative turn" of an arc that has one;
- **start** and **end** are the first and the last turn in time;
- the **peak** is the most negative turn (highest negativity; the earliest of equals);
- **ended calmer**: the last turn's negativity is lower than the first's (NULL for one turn);
- **recovery**: when the peak turn is negative, the first later calm turn; ``recovery_s`` is the
  time from the start of the peak turn to the start of that calm turn. ``recovered`` is NULL when
  the peak is not negative (there was nothing to recover from), false when no calm turn follows.

One function, :func:`voice_arc`, serves the pipeline (``call_emotion_arc``), ``emo analyze``
and the web page: a voice with at least one turn has an arc (one turn is an arc too: start, end and
peak are that turn). No dagster here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from emo_assets.lib.analytics.satisfaction import NEGATIVE_EMOTIONS, POSITIVE_EMOTIONS
from emo_assets.lib.schemas import CALL_EMOTION_ARC, EMOTION_LABELS, MONO

CALM_EMOTIONS = POSITIVE_EMOTIONS
_NEGATIVE_INDEX = [EMOTION_LABELS.index(e) for e in NEGATIVE_EMOTIONS]
_CALM_INDEX = [EMOTION_LABELS.index(e) for e in CALM_EMOTIONS]
# A turn is negative (calm) when its negative (calm) classes hold more than this share of its scores.
MOST = 0.5


class ArcError(ValueError):
    """Turns an arc cannot be drawn from (none, scores of the wrong width, end before start)."""


@dataclass(frozen=True)
class Turn:
    """One turn of one voice: its index, times and 9 class scores (EMOTION_LABELS order)."""

    turn: int
    start_s: float
    end_s: float
    scores: tuple[float, ...]

    @property
    def emotion(self) -> str:
        return EMOTION_LABELS[int(np.argmax(self.scores))]

    @property
    def negativity(self) -> float:
        return float(sum(self.scores[i] for i in _NEGATIVE_INDEX))

    @property
    def calmness(self) -> float:
        return float(sum(self.scores[i] for i in _CALM_INDEX))

    @property
    def negative(self) -> bool:
        return self.negativity > MOST

    @property
    def calm(self) -> bool:
        return self.calmness > MOST


@dataclass(frozen=True)
class Arc:
    """The arc of one voice; the columns of ``call_emotion_arc`` after its key."""

    turns: int
    duration_s: float
    start_emotion: str
    start_negativity: float
    end_emotion: str
    end_negativity: float
    peak_turn: int
    peak_start_s: float
    peak_end_s: float
    peak_emotion: str
    peak_negativity: float
    ended_calmer: bool | None
    recovered: bool | None
    recovery_turn: int | None
    recovery_s: float | None


def emotion_arc(turns: Sequence[Turn]) -> Arc:
    """The arc of ``turns`` (any order: they are put in time order)."""
    if not turns:
        raise ArcError("no turns: an arc needs at least one scored turn")
    for t in turns:
        if len(t.scores) != len(EMOTION_LABELS):
            raise ArcError(f"turn {t.turn}: {len(t.scores)} scores, expected {len(EMOTION_LABELS)}")
        if not t.end_s >= t.start_s:
            raise ArcError(f"turn {t.turn}: ends at {t.end_s} s, before it starts at {t.start_s} s")
    ordered = sorted(turns, key=lambda t: (t.start_s, t.turn))
    first, last = ordered[0], ordered[-1]
    negativity = [t.negativity for t in ordered]
    peak_at = int(np.argmax(negativity))  # the first of equals
    peak = ordered[peak_at]
    recovered = recovery = None
    if peak.negative:
        recovery = next((t for t in ordered[peak_at + 1 :] if t.calm), None)
        recovered = recovery is not None
    return Arc(
        turns=len(ordered),
        duration_s=float(last.end_s - first.start_s),
        start_emotion=first.emotion,
        start_negativity=first.negativity,
        end_emotion=last.emotion,
        end_negativity=last.negativity,
        peak_turn=peak.turn,
        peak_start_s=float(peak.start_s),
        peak_end_s=float(peak.end_s),
        peak_emotion=peak.emotion,
        peak_negativity=peak.negativity,
        ended_calmer=None if len(ordered) == 1 else last.negativity < first.negativity,
        recovered=recovered,
        recovery_turn=None if recovery is None else recovery.turn,
        recovery_s=None if recovery is None else float(recovery.start_s - peak.start_s),
    )


def voice_arc(turns: Sequence[Turn]) -> Arc | None:
    """The arc of one voice's turns, or None when it has none: the rule every door follows (the
    ``call_emotion_arc`` rows, ``emo analyze``'s result.json, ``emo report`` and the web page)."""
    return emotion_arc(turns) if turns else None


def _column(segments: pa.Table, name: str, default) -> list:
    """A column of ``segments``; rows written before the column existed read as ``default``."""
    if name not in segments.column_names:
        return [default] * segments.num_rows
    return [default if v is None else v for v in segments.column(name).to_pylist()]


def arc_rows(segments: pa.Table) -> pa.Table:
    """One ``call_emotion_arc`` row per recording, day, model and channel of ``emotion_segments`` rows.

    A row with no ``channel`` (written before channels existed) is the mono voice; a row with no
    ``turn`` takes its position in time within its voice.
    """
    keys = list(
        zip(
            segments.column("audio_id").to_pylist(),
            segments.column("date").to_pylist(),
            segments.column("model_id").to_pylist(),
            _column(segments, "channel", MONO),
        )
    )
    starts = segments.column("start_s").to_pylist()
    ends = segments.column("end_s").to_pylist()
    numbers = _column(segments, "turn", None)
    scores = np.column_stack([segments.column(c).to_numpy(zero_copy_only=False) for c in EMOTION_LABELS])
    voices: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        voices.setdefault(key, []).append(i)
    rows = []
    for key in sorted(voices):
        ordered = sorted(voices[key], key=lambda i: starts[i])
        turns = [
            Turn(
                pos if numbers[i] is None else int(numbers[i]),
                starts[i],
                ends[i],
                tuple(float(s) for s in scores[i]),
            )
            for pos, i in enumerate(ordered)
        ]
        audio_id, date, model_id, channel = key
        rows.append(
            {"audio_id": audio_id, "date": date, "model_id": model_id, "channel": channel, **asdict(voice_arc(turns))}
        )
    return pa.Table.from_pylist(rows, schema=CALL_EMOTION_ARC)


def arc_sentence(arc: Mapping, name: Callable[[str], str] = str) -> str:
    """An arc (a ``call_emotion_arc`` row, or :class:`Arc` as a dict) in words, as ``emo report``
    and the web page print it; ``name`` spells an emotion (the page puts its emoji first). Whether
    there was a negative or a calm turn is read from the arc's own ``recovered``, never re-decided."""
    if arc["recovered"] is None:
        recovery = f"no turn more than {MOST:.0%} negative"
    elif arc["recovered"]:
        recovery = f"calm again {arc['recovery_s']:.1f} s after it started"
    else:
        recovery = "no calm turn after it"
    calmer = {None: "", True: " · ended calmer", False: " · did not end calmer"}[arc["ended_calmer"]]
    return (
        f"Arc: {name(arc['start_emotion'])} → {name(arc['end_emotion'])} · most negative: "
        f"{name(arc['peak_emotion'])} at {arc['peak_start_s']:.1f}–{arc['peak_end_s']:.1f} s "
        f"(negativity {arc['peak_negativity']:.2f}), {recovery}{calmer}"
    )
