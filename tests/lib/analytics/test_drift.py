"""Drift: PSI and cosine shift by hand, day profiles from rows, the trailing window."""

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from emo_assets.lib import schemas
from emo_assets.lib.analytics import drift
from emo_assets.lib.store import lake


@pytest.mark.parametrize(
    ("expected", "actual", "psi"),
    [
        ([50, 50], [50, 50], 0.0),
        ([1, 1], [5, 5], 0.0),  # counts or shares: only the shares matter
        ([50, 50], [90, 10], 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)),
        ([0.25, 0.75], [0.5, 0.5], 0.25 * math.log(0.5 / 0.25) + (-0.25) * math.log(0.5 / 0.75)),
    ],
)
def test_psi_known_values(expected, actual, psi):
    assert drift.population_stability_index(expected, actual) == pytest.approx(psi, abs=1e-12)


def test_psi_is_symmetric_and_finite_when_a_class_empties():
    e, a = [10, 0, 5], [0, 10, 5]
    assert drift.population_stability_index(e, a) == pytest.approx(drift.population_stability_index(a, e))
    value = drift.population_stability_index(e, a)
    assert math.isfinite(value) and value > 5  # an emptied class is a large shift


def test_psi_nine_classes_same_empty_classes_only_the_used_ones_count():
    e = [50, 0, 0, 0, 50, 0, 0, 0, 0]
    a = [90, 0, 0, 0, 10, 0, 0, 0, 0]
    two = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert drift.population_stability_index(e, a) == pytest.approx(two / (1 + 7 * drift.PSI_FLOOR), rel=1e-9)


@pytest.mark.parametrize(
    ("expected", "actual", "words"),
    [
        ([0, 0], [1, 1], "all be zero"),
        ([1, -1], [1, 1], ">= 0"),
        ([1, 1], [1, 1, 1], "classes"),
        ([1, float("nan")], [1, 1], "finite"),
        ([], [], "non-empty"),
    ],
)
def test_psi_refuses_what_is_not_a_distribution(expected, actual, words):
    with pytest.raises(drift.DriftError, match=words):
        drift.population_stability_index(expected, actual)


@pytest.mark.parametrize(
    ("a", "b", "shift"),
    [
        ([1, 0], [3, 0], 0.0),
        ([1, 0], [0, 2], 1.0),
        ([1, 0], [-1, 0], 2.0),
        ([1, 1], [1, 0], 1 - 1 / math.sqrt(2)),
    ],
)
def test_cosine_shift_known_values(a, b, shift):
    assert drift.cosine_shift(a, b) == pytest.approx(shift, abs=1e-12)


@pytest.mark.parametrize(("a", "b"), [([0, 0], [1, 0]), ([1, 0], [1, 0, 0]), ([np.inf, 0], [1, 0])])
def test_cosine_shift_refuses_vectors_without_a_direction(a, b):
    with pytest.raises(drift.DriftError):
        drift.cosine_shift(a, b)


def _rows(day: str, emotions: list[str], vectors: list[list[float]], model_id: str = "m"):
    date = dt.date.fromisoformat(day)
    ids = [f"{day}-{i}" for i in range(len(emotions))]
    scores = pa.Table.from_pylist(
        [
            {"audio_id": a, "date": date, "model_id": model_id, "emotion": e, "confidence": 1.0}
            | {label: float(label == e) for label in schemas.EMOTION_LABELS}
            for a, e in zip(ids, emotions)
        ],
        schema=schemas.EMOTION_SCORES,
    )
    embeddings = pa.Table.from_pylist(
        [{"audio_id": a, "date": date, "model_id": model_id, "embedding": v} for a, v in zip(ids, vectors)],
        schema=schemas.emotion_embeddings_schema(len(vectors[0])),
    )
    return scores, embeddings


def test_day_profile_counts_top_emotions_and_sums_normalised_embeddings():
    scores, embeddings = _rows("2026-11-01", ["angry", "angry", "neutral"], [[3, 0], [0, 5], [1, 0]])
    (profile,) = drift.day_profiles("2026-11-01", scores, embeddings).values()
    assert profile.recordings == 3
    assert dict(zip(schemas.EMOTION_LABELS, profile.counts)) == {
        **dict.fromkeys(schemas.EMOTION_LABELS, 0),
        "angry": 2,
        "neutral": 1,
    }
    np.testing.assert_allclose(profile.embedding_sum, [2.0, 1.0])  # each vector counts with length 1
    assert drift.day_profiles("2026-11-01", None, None) == {}


def test_history_compares_each_day_with_the_seven_days_before_it(tmp_path):
    lake_dir = tmp_path / "lake"
    # 2026-11-01 is 9 days before the 10th: outside its window. The 3rd..9th are its baseline.
    days = {
        "2026-11-01": (["sad"] * 4, [[0, 1]] * 4),
        **{f"2026-11-0{d}": (["neutral", "happy"], [[1, 0], [1, 0]]) for d in range(3, 10)},
        "2026-11-10": (["neutral", "happy"], [[1, 0], [1, 0]]),
        "2026-11-11": (["angry"] * 3 + ["neutral"], [[0, 1]] * 4),
    }
    for day, (emotions, vectors) in days.items():
        scores, embeddings = _rows(day, emotions, vectors)
        lake.write_partition(lake_dir, "emotion_scores", day, scores)
        lake.write_partition(lake_dir, "emotion_embeddings", day, embeddings)

    history = drift.day_drift(lake_dir, "2026-11-11", baseline_days=7, history_days=11)
    by_day = {d.day: d for d in history}
    assert sorted(by_day) == sorted(days)  # days with no rows (the 2nd) are left out
    first = by_day["2026-11-01"]
    assert first.baseline_days == () and first.psi is None and first.cosine_shift is None
    assert not first.flagged(0.2, 0.05)

    stable = by_day["2026-11-10"]
    assert stable.baseline_days == tuple(f"2026-11-0{d}" for d in range(3, 10))  # not the 1st
    assert stable.baseline_recordings == 14
    assert stable.psi == pytest.approx(0.0, abs=1e-12)
    assert stable.cosine_shift == pytest.approx(0.0, abs=1e-12)
    assert not stable.flagged(0.2, 0.05)

    moved = by_day["2026-11-11"]  # against the 4th..10th: neutral/happy 50/50, all along [1, 0]
    assert moved.baseline_days == tuple(f"2026-11-{d:02d}" for d in range(4, 11))
    expected = drift.population_stability_index(
        [7 if label in ("neutral", "happy") else 0 for label in schemas.EMOTION_LABELS],
        [3 if label == "angry" else int(label == "neutral") for label in schemas.EMOTION_LABELS],
    )
    assert moved.psi == pytest.approx(expected) and moved.psi > 0.2
    assert moved.cosine_shift == pytest.approx(1.0)  # [0, 1] against [1, 0]
    assert moved.flagged(0.2, 0.05)
    assert not moved.flagged(psi_warn=100, cosine_warn=1.5)  # thresholds are the caller's


def test_models_are_never_pooled():
    a, ea = _rows("2026-11-02", ["happy"], [[1, 0]], model_id="large")
    b, eb = _rows("2026-11-01", ["sad"], [[0, 1]], model_id="base")
    profiles = {
        "2026-11-02": drift.day_profiles("2026-11-02", a, ea),
        "2026-11-01": drift.day_profiles("2026-11-01", b, eb),
    }
    (d,) = drift.drift_history(profiles, ["2026-11-02"])
    assert d.model_id == "large" and d.baseline_days == () and d.psi is None
    with pytest.raises(drift.DriftError, match="model"):
        drift.compare(profiles["2026-11-02"]["large"], [profiles["2026-11-01"]["base"]])
