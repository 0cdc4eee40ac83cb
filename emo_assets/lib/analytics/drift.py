"""Drift of a day against the days before it: population stability index and cosine shift.

A day's *profile* (per ``model_id``: embeddings of two models are not comparable) is the count of
recordings per top emotion (``emotion_scores.emotion``, the 9 classes) and the sum of its
recordings' L2-normalised embeddings. A day is compared with the pooled profile of the trailing
``baseline_days`` days (the days before it that have rows for the same model):

- **PSI** (population stability index) of the top-emotion shares:
  ``sum_i (a_i - e_i) * ln(a_i / e_i)`` over the 9 classes, ``e`` the baseline's shares, ``a`` the
  day's. A class no recording has gets the share ``PSI_FLOOR`` (then the shares are renormalised),
  so one empty class gives a large but finite number. Rule of thumb: below 0.1 stable, 0.1-0.25 a
  moderate shift, above 0.25 a large one.
- **cosine shift**: ``1 - cos(m_day, m_baseline)``, the means of the normalised embeddings;
  0 when the mean direction is unchanged, up to 2.

A day is flagged when either number is past its threshold (:data:`DEFAULT_PSI_WARN`,
:data:`DEFAULT_COSINE_WARN`; the asset check's config sets them). No dagster here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emo_assets.lib.schemas import EMOTION_LABELS
from emo_assets.lib.store import lake

DEFAULT_PSI_WARN = 0.2
DEFAULT_COSINE_WARN = 0.05
BASELINE_DAYS = 7
HISTORY_DAYS = 30
# The share an empty class counts with, so that ln(a / e) stays finite.
PSI_FLOOR = 1e-4


class DriftError(ValueError):
    """Inputs drift cannot be computed from (wrong length, negative counts, empty or non-finite vectors)."""


def _shares(counts: Sequence[float], floor: float) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise DriftError(f"counts must be a non-empty 1-D sequence, got shape {c.shape}")
    if not np.isfinite(c).all() or (c < 0).any():
        raise DriftError("counts must be finite and >= 0")
    if c.sum() <= 0:
        raise DriftError("counts must not all be zero: a distribution needs at least one recording")
    shares = np.maximum(c / c.sum(), floor)
    return shares / shares.sum()


def population_stability_index(expected: Sequence[float], actual: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """PSI of ``actual`` against ``expected`` (counts or shares per class, same order and length).

    0 for identical distributions; symmetric in its arguments; grows without bound as a class
    empties (bounded by the floor)."""
    e = _shares(expected, floor)
    a = _shares(actual, floor)
    if e.shape != a.shape:
        raise DriftError(f"expected has {e.size} classes, actual {a.size}; they must match")
    return float(np.sum((a - e) * np.log(a / e)))


def cosine_shift(a: Sequence[float], b: Sequence[float]) -> float:
    """``1 - cos(a, b)``: 0 for the same direction, 1 orthogonal, 2 opposite."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise DriftError(f"vectors of width {x.size} and {y.size} cannot be compared")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DriftError("vectors must be finite")
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 or ny == 0:
        raise DriftError("a zero vector has no direction")
    return float(1.0 - np.clip(x @ y / (nx * ny), -1.0, 1.0))


@dataclass(frozen=True)
class DayProfile:
    """One day of one model: recordings, recordings per top emotion (EMOTION_LABELS order), and the
    sum of the recordings' normalised embeddings (None when the day has no embedding rows)."""

    day: str
    model_id: str
    recordings: int
    counts: tuple[int, ...]
    embedding_sum: np.ndarray | None
    embedded: int = 0


def day_profiles(day: str, scores: pa.Table | None, embeddings: pa.Table | None) -> dict[str, DayProfile]:
    """The day's profile per model_id, from its ``emotion_scores`` and ``emotion_embeddings`` rows."""
    if scores is None or scores.num_rows == 0:
        return {}
    profiles = {}
    for model_id in sorted(set(scores.column("model_id").to_pylist())):
        rows = scores.filter(pc.equal(scores.column("model_id"), model_id))
        top = rows.column("emotion").to_pylist()
        counts = tuple(top.count(label) for label in EMOTION_LABELS)
        total, embedded = None, 0
        if embeddings is not None and embeddings.num_rows:
            vectors = embeddings.filter(pc.equal(embeddings.column("model_id"), model_id))
            if vectors.num_rows:
                matrix = lake.embedding_matrix(vectors).astype(np.float64)
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                matrix = matrix[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
                total, embedded = matrix.sum(axis=0), matrix.shape[0]
        profiles[model_id] = DayProfile(day, model_id, rows.num_rows, counts, total, embedded)
    return profiles


@dataclass(frozen=True)
class DayDrift:
    """A day of one model against its baseline. ``psi``/``cosine_shift`` are None without a
    baseline (no earlier day of the model in the window) or, for the shift, without embeddings."""

    day: str
    model_id: str
    recordings: int
    baseline_days: tuple[str, ...]
    baseline_recordings: int
    psi: float | None
    cosine_shift: float | None

    def flagged(self, psi_warn: float, cosine_warn: float) -> bool:
        return (self.psi is not None and self.psi > psi_warn) or (
            self.cosine_shift is not None and self.cosine_shift > cosine_warn
        )


def compare(profile: DayProfile, baseline: Sequence[DayProfile]) -> DayDrift:
    """``profile`` against the pooled ``baseline`` profiles (same model_id)."""
    other = [p for p in baseline if p.model_id != profile.model_id]
    if other:
        raise DriftError(f"baseline day {other[0].day} is of model {other[0].model_id}, not {profile.model_id}")
    days = tuple(sorted(p.day for p in baseline))
    n = sum(p.recordings for p in baseline)
    if not baseline or n == 0:
        return DayDrift(profile.day, profile.model_id, profile.recordings, days, n, None, None)
    counts = np.sum([p.counts for p in baseline], axis=0)
    psi = population_stability_index(counts, profile.counts)
    sums = [p.embedding_sum for p in baseline if p.embedding_sum is not None]
    shift = None
    if sums and profile.embedding_sum is not None:
        shift = cosine_shift(profile.embedding_sum, np.sum(sums, axis=0))
    return DayDrift(profile.day, profile.model_id, profile.recordings, days, n, psi, shift)


def _days_before(day: str, n: int) -> list[str]:
    d = dt.date.fromisoformat(day)
    return [(d - dt.timedelta(days=i)).isoformat() for i in range(n, 0, -1)]


def read_profiles(lake_dir: Path, days: Sequence[str]) -> dict[str, dict[str, DayProfile]]:
    """Profiles of ``days`` from the lake (days with no emotion_scores are left out). Reads each
    day's scores and embeddings once, one day at a time. A recording counts once, as the rest of the
    analytics count it (``lake.voice_rows``: a two-channel call's customer side, else its mono row).
    A corrupt partition raises ``lake.CorruptPartitionError`` naming the file."""
    out = {}
    for day in days:
        scores = lake.voice_rows(lake.read_partition(lake_dir, "emotion_scores", day))
        if scores is None:
            continue
        embeddings = lake.voice_rows(lake.read_partition(lake_dir, "emotion_embeddings", day))
        out[day] = day_profiles(day, scores, embeddings)
    return out


def drift_history(
    profiles: Mapping[str, Mapping[str, DayProfile]],
    days: Sequence[str],
    baseline_days: int = BASELINE_DAYS,
) -> list[DayDrift]:
    """For each of ``days`` that has a profile, each model's drift against the ``baseline_days``
    calendar days before it (those of them with rows for that model)."""
    if baseline_days < 1:
        raise DriftError(f"baseline_days must be at least 1, got {baseline_days}")
    out = []
    for day in days:
        for model_id, profile in sorted(profiles.get(day, {}).items()):
            baseline = [
                profiles[d][model_id]
                for d in _days_before(day, baseline_days)
                if d in profiles and model_id in profiles[d]
            ]
            out.append(compare(profile, baseline))
    return out


def day_drift(
    lake_dir: Path, day: str, baseline_days: int = BASELINE_DAYS, history_days: int = HISTORY_DAYS
) -> list[DayDrift]:
    """The drift of the ``history_days`` days ending with ``day`` (inclusive), each against its
    own trailing ``baseline_days``: the last rows are ``day``'s, one per model."""
    if history_days < 1:
        raise DriftError(f"history_days must be at least 1, got {history_days}")
    window = [*_days_before(day, history_days - 1), day]
    profiles = read_profiles(lake_dir, [*_days_before(window[0], baseline_days), *window])
    return drift_history(profiles, window, baseline_days)
