"""A row of ``emotion_scores`` or ``emotion_segments`` from a model's nine scores, and the checks
that tell whether stored rows can be what the model wrote. Pure numpy and pyarrow."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from emo_assets.lib import schemas

# How far a recording's nine scores may sum from 1 (the ``scores_sum_to_one`` check's rule).
SCORE_SUM_TOLERANCE = 1e-5


def _score_matrix(rows: pa.Table) -> np.ndarray:
    if not rows.num_rows:
        return np.zeros((0, len(schemas.EMOTION_LABELS)))
    return np.column_stack([rows.column(c).to_numpy() for c in schemas.EMOTION_LABELS]).astype(np.float64)


def _scores_off_mask(rows: pa.Table) -> np.ndarray:
    matrix = _score_matrix(rows)
    return ~np.isfinite(matrix).all(axis=1) | ~(np.abs(matrix.sum(axis=1) - 1.0) <= SCORE_SUM_TOLERANCE)


def scores_off(rows: pa.Table) -> list[str]:
    """The ``audio_id``s of rows whose nine scores are not a probability distribution: a score that
    is NaN or infinite, or a sum more than :data:`SCORE_SUM_TOLERANCE` from 1."""
    bad = _scores_off_mask(rows)
    return sorted({a for a, b in zip(rows.column("audio_id").to_pylist(), bad) if b})


def unsound_mask(rows: pa.Table) -> np.ndarray:
    """Per row: :func:`scores_off`, or ``confidence`` not the top score, or ``emotion`` not a class holding it."""
    bad = _scores_off_mask(rows)
    if rows.num_rows:
        matrix = _score_matrix(rows)
        top = matrix.max(axis=1)
        confidence = rows.column("confidence").to_numpy().astype(np.float64)
        labels = list(schemas.EMOTION_LABELS)
        named = np.array(
            [matrix[i, labels.index(e)] if e in labels else np.nan for i, e in enumerate(rows["emotion"].to_pylist())]
        )
        bad = bad | (confidence != top) | (named != top)
    return bad


def unsound_score_rows(rows: pa.Table) -> list[str]:
    """The ``audio_id``s of ``emotion_scores`` or ``emotion_segments`` rows that cannot be what the
    model wrote: :func:`scores_off`, or ``confidence`` not the top score, or ``emotion`` not a class
    holding it."""
    return sorted({a for a, b in zip(rows.column("audio_id").to_pylist(), unsound_mask(rows)) if b})


def score_rows(audio_id: str, date: dt.date, model_id: str, scores: np.ndarray, **extra) -> dict:
    best = int(np.argmax(scores))
    return {
        "audio_id": audio_id,
        "date": date,
        "model_id": model_id,
        **extra,
        "emotion": schemas.EMOTION_LABELS[best],
        "confidence": float(scores[best]),
        **{label: float(s) for label, s in zip(schemas.EMOTION_LABELS, scores)},
    }


def segment_row(
    audio_id: str,
    date: dt.date,
    model_id: str,
    start_s: float,
    end_s: float,
    scores,
    *,
    channel: str = schemas.MONO,
    turn: int = 0,
    speech_share: float | None = None,
) -> dict:
    return score_rows(
        audio_id,
        date,
        model_id,
        np.asarray(scores),
        channel=channel,
        turn=turn,
        start_s=float(start_s),
        end_s=float(end_s),
        speech_share=speech_share,
    )
