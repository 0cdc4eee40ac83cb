"""The approximate similarity index (ann.py): exact before training, close to exact after, one file per
day (re-runs replace, never duplicate), and a clear error for every bad input."""

from __future__ import annotations

import numpy as np
import pytest

from emo_assets.lib.analytics import ann
from tests.helpers import numpy_top_k

WIDTH = 32
SMALL = ann.AnnSettings(nlist=8, train_min=400, nprobe=8)  # nprobe = nlist: only the 8-bit codes approximate


def _clustered(n: int, seed: int, width: int = WIDTH) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((12, width)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, width)).astype(np.float32)
    return x.astype(np.float32)


def _ids(day: str, n: int) -> list[str]:
    return [f"{day}-{i}" for i in range(n)]


def _write_days(root, days: dict[str, np.ndarray], model: str = "m", settings=SMALL) -> list[ann.DayWritten]:
    return [ann.write_day(root, model, day, _ids(day, len(x)), x, settings) for day, x in days.items()]


def _exact(days: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    ids = [i for day, x in days.items() for i in _ids(day, len(x))]
    top, _ = numpy_top_k(np.concatenate(list(days.values())), query, k)
    return [ids[i] for i in top]


def test_before_training_search_is_exact(tmp_path):
    days = {"2026-11-01": _clustered(100, 1), "2026-11-02": _clustered(120, 2)}
    written = _write_days(tmp_path, days)
    assert [w.trained for w in written] == [False, False]
    index = ann.load_index(tmp_path, "m")
    assert index.size == 220 and not index.trained
    for q in _clustered(5, 7):
        hits = index.search(q, 10)
        assert [h.audio_id for h in hits] == _exact(days, q, 10)
        _, sims = numpy_top_k(np.concatenate(list(days.values())), q, 10)
        np.testing.assert_allclose([h.similarity for h in hits], sims, atol=1e-5)


def test_reaching_train_min_trains_once_then_days_are_only_encoded(tmp_path):
    days = {f"2026-11-0{i}": _clustered(150, i) for i in range(1, 5)}
    written = _write_days(tmp_path, days)
    assert [(w.trained, w.trained_now) for w in written] == [
        (False, False),
        (False, False),
        (True, True),  # 450 >= train_min: trained here, the first two days re-encoded
        (True, False),
    ]
    folder = ann.model_dir(tmp_path, "m")
    for day in days:
        with np.load(ann.day_path(tmp_path, "m", day)) as npz:
            assert "shard" in npz.files and "vectors" not in npz.files
    # one more day touches no other file
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.*") if p.is_file()}
    ann.write_day(tmp_path, "m", "2026-11-05", _ids("2026-11-05", 150), _clustered(150, 5), SMALL)
    after = {p: p.stat().st_mtime_ns for p in folder.rglob("*.*") if p.is_file()}
    assert {p for p in after if before.get(p) != after[p]} == {ann.day_path(tmp_path, "m", "2026-11-05")}

    days["2026-11-05"] = _clustered(150, 5)
    index = ann.load_index(tmp_path, "m")
    assert index.trained and index.size == 750
    recalls = []
    for q in _clustered(20, 11):
        got = [h.audio_id for h in index.search(q, 10)]
        recalls.append(len(set(got) & set(_exact(days, q, 10))) / 10)
    assert np.mean(recalls) >= 0.95


def test_rerunning_a_day_replaces_it_and_removing_drops_it(tmp_path):
    days = {f"2026-11-0{i}": _clustered(150, i) for i in range(1, 5)}
    _write_days(tmp_path, days)
    new = _clustered(40, 42)
    ann.write_day(tmp_path, "m", "2026-11-02", [f"new-{i}" for i in range(40)], new, SMALL)
    index = ann.load_index(tmp_path, "m")
    assert index.size == 150 * 3 + 40
    hit = index.search(days["2026-11-02"][0], 1)[0]
    assert not hit.audio_id.startswith("2026-11-02-")  # the day's old rows are gone
    assert index.search(new[3], 1)[0].audio_id == "new-3"

    assert ann.remove_day(tmp_path, "m", "2026-11-02") is True
    assert ann.remove_day(tmp_path, "m", "2026-11-02") is False
    assert ann.load_index(tmp_path, "m").size == 450
    assert ann.indexed_days(tmp_path, "m") == ["2026-11-01", "2026-11-03", "2026-11-04"]


@pytest.mark.parametrize("trained", [False, True])
def test_in_memory_add_day_replaces_and_date_from_filters(tmp_path, trained):
    x = _clustered(500, 3)
    base = ann.train_ivf(x, SMALL) if trained else None
    index = ann.AnnIndex(WIDTH, base, SMALL)
    index.add_day("2026-11-01", _ids("2026-11-01", 250), x[:250])
    index.add_day("2026-11-02", _ids("2026-11-02", 250), x[250:])
    index.add_day("2026-11-02", _ids("2026-11-02", 250), x[250:])  # again: replaced
    assert index.size == 500 and index.days == ["2026-11-01", "2026-11-02"]
    hits = index.search(x[0], 20, date_from="2026-11-02")
    assert len(hits) == 20 and {h.date.isoformat() for h in hits} == {"2026-11-02"}
    assert index.remove_day("2026-11-01") == 250 and index.size == 250


def test_one_hit_per_recording_newest_day_and_the_query_left_out(tmp_path):
    x = _clustered(30, 4)
    ann.write_day(tmp_path, "m", "2026-11-01", [f"a{i}" for i in range(30)], x, SMALL)
    ann.write_day(tmp_path, "m", "2026-11-03", ["a0", "a1"], x[:2], SMALL)  # the same recordings again
    index = ann.load_index(tmp_path, "m")
    hits = index.search(x[0], 5, exclude="a0")
    assert "a0" not in [h.audio_id for h in hits]
    assert len({h.audio_id for h in hits}) == 5
    a1 = next(h for h in index.search(x[1], 3) if h.audio_id == "a1")
    assert a1.date.isoformat() == "2026-11-03" and a1.similarity == pytest.approx(1.0, abs=1e-5)


def test_two_models_are_two_indexes(tmp_path):
    ann.write_day(tmp_path, "org/model-a", "2026-11-01", ["x"], np.ones((1, 8), np.float32), SMALL)
    ann.write_day(tmp_path, "model-b", "2026-11-01", ["y"], np.ones((1, 16), np.float32), SMALL)
    assert ann.indexed_models(tmp_path) == ["model-b", "org/model-a"]
    assert ann.load_index(tmp_path, "org/model-a").width == 8
    assert ann.load_index(tmp_path, "model-b").search(np.ones(16), 1)[0].audio_id == "y"


# ---- bad input: a clear error each ----------------------------------------------------------------------


@pytest.fixture
def small_index(tmp_path):
    _write_days(tmp_path, {"2026-11-01": _clustered(50, 1)})
    return ann.load_index(tmp_path, "m")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (np.ones(WIDTH + 1), "has 33 values but this index holds 32-wide"),
        (np.ones(WIDTH - 8), "has 24 values but this index holds 32-wide"),
        (np.r_[np.ones(WIDTH - 1), np.nan], "NaN or Inf"),
        (np.r_[np.ones(WIDTH - 1), np.inf], "NaN or Inf"),
        (np.zeros(WIDTH), "all zeros"),
        (np.ones((2, WIDTH)), "must be one vector"),
    ],
)
def test_bad_query_vectors_are_refused(small_index, query, message):
    with pytest.raises(ann.AnnError, match=message):
        small_index.search(query, 5)


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_bad_k_is_refused(small_index, k):
    with pytest.raises(ann.AnnError, match="k must be"):
        small_index.search(np.ones(WIDTH), k)


def test_bad_date_from_is_refused(small_index):
    with pytest.raises(ann.AnnError, match="not a day"):
        small_index.search(np.ones(WIDTH), 5, date_from="2026-13-45")


def test_an_empty_index_says_so(tmp_path):
    _write_days(tmp_path, {"2026-11-01": _clustered(5, 1)})
    ann.remove_day(tmp_path, "m", "2026-11-01")
    with pytest.raises(ann.AnnError, match="index is empty"):
        ann.load_index(tmp_path, "m").search(np.ones(WIDTH), 5)


def test_a_model_without_an_index_says_which_exist(tmp_path):
    _write_days(tmp_path, {"2026-11-01": _clustered(5, 1)})
    with pytest.raises(ann.NoIndexError, match=r"no similarity index for model 'other'.*indexed models: m"):
        ann.load_index(tmp_path, "other")
    with pytest.raises(ann.NoIndexError, match="indexed models: none"):
        ann.load_index(tmp_path / "nothing", "m")


@pytest.mark.parametrize(
    ("vectors", "ids", "message"),
    [
        (np.ones((2, WIDTH + 1)), ["a", "b"], "33-wide but this index holds 32-wide"),
        (np.full((2, WIDTH), np.nan), ["a", "b"], "2 row\\(s\\) hold NaN or Inf"),
        (np.ones((2, WIDTH)), ["a"], "1 audio_ids for 2 embeddings"),
        (np.ones(WIDTH), ["a"], "must be a 2-D array"),
    ],
)
def test_bad_days_are_refused_and_leave_the_index_as_it_was(tmp_path, vectors, ids, message):
    _write_days(tmp_path, {"2026-11-01": _clustered(5, 1)})
    with pytest.raises(ann.AnnError, match=message):
        ann.write_day(tmp_path, "m", "2026-11-02", ids, vectors, SMALL)
    assert ann.indexed_days(tmp_path, "m") == ["2026-11-01"]


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ann.AnnError, match="train_min"):
        ann.AnnSettings(nlist=100, train_min=50)
