import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emo_assets.lib.analytics.satisfaction import (
    MIN_LABELS,
    Label,
    SatisfactionModel,
    fit_satisfaction_model,
    load_satisfaction_model,
    predict_satisfaction,
    read_labels,
    satisfaction_rule,
    save_satisfaction_model,
)

# Canonical class order, spelled out here so these tests do not depend on emotion_model.py.
EMOTIONS = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown")
DIM = 6


def scores_row(**probs: float) -> list[float]:
    return [probs.get(e, 0.0) for e in EMOTIONS]


def separable(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n_per_class, DIM)).astype(np.float32)
    x[:n_per_class, 0] += 4.0
    x[n_per_class:, 0] -= 4.0
    return x, ["satisfied"] * n_per_class + ["dissatisfied"] * n_per_class


# --- rule -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "label", "probability"),
    [
        (scores_row(happy=0.7, angry=0.1, other=0.2), "satisfied", 0.875),
        (scores_row(neutral=0.3, happy=0.1, sad=0.5, fearful=0.1), "dissatisfied", 0.6),
        (scores_row(angry=0.25, disgusted=0.25, neutral=0.5), "satisfied", 0.5),  # tie -> satisfied
        (scores_row(surprised=0.6, other=0.3, unknown=0.1), "satisfied", 0.5),  # no valence at all
        (scores_row(angry=1.0), "dissatisfied", 1.0),
        (scores_row(neutral=0.2, surprised=0.8), "satisfied", 1.0),
    ],
)
def test_rule_on_hand_made_scores(row, label, probability):
    labels, prob = satisfaction_rule(np.array([row]), EMOTIONS)
    assert labels == [label]
    assert prob.dtype == np.float32
    assert prob[0] == pytest.approx(probability, abs=1e-6)


@given(arrays(np.float64, (5, 9), elements=st.floats(0, 1)))
def test_rule_probability_is_the_winning_share(scores):
    labels, prob = satisfaction_rule(scores, EMOTIONS)
    positive = scores[:, [3, 4]].sum(axis=1)
    negative = scores[:, [0, 1, 2, 6]].sum(axis=1)
    assert ((prob >= 0.5) & (prob <= 1.0)).all()
    for label, p, pos, neg in zip(labels, prob, positive, negative):
        assert label == ("satisfied" if pos >= neg else "dissatisfied")
        if pos + neg > 0:
            assert p == pytest.approx(max(pos, neg) / (pos + neg), rel=1e-6)


def test_rule_follows_the_given_column_order():
    order = tuple(reversed(EMOTIONS))
    row = [0.0] * 9
    row[order.index("angry")] = 0.9
    row[order.index("happy")] = 0.1
    labels, prob = satisfaction_rule(np.array([row]), order)
    assert labels == ["dissatisfied"] and prob[0] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        (np.zeros((2, 8)), EMOTIONS, "9 emotion labels"),
        (np.zeros((2, 9)), tuple("calm" if e == "happy" else e for e in EMOTIONS), "lack"),
        (np.full((1, 9), np.nan), EMOTIONS, "finite"),
        (np.full((1, 9), -0.1), EMOTIONS, "non-negative"),
    ],
)
def test_rule_refuses_bad_scores(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        satisfaction_rule(scores, labels)


def test_predict_without_model_uses_the_rule():
    scores = np.array([scores_row(happy=1.0), scores_row(sad=0.8, neutral=0.2)])
    labels, prob, source = predict_satisfaction(None, np.zeros((2, DIM)), scores, EMOTIONS)
    assert labels == ["satisfied", "dissatisfied"]
    np.testing.assert_allclose(prob, [1.0, 0.8], rtol=1e-6)
    assert source == ["rule:emotion_valence"] * 2


# --- model ------------------------------------------------------------------------------------


def test_too_few_labels_gives_no_model_and_the_rule():
    x, y = separable(MIN_LABELS // 2 - 1)
    model, reason = fit_satisfaction_model(x, y)
    assert model is None
    assert f"only {len(y)} labelled" in reason and str(MIN_LABELS) in reason
    scores = np.tile(scores_row(happy=1.0), (len(x), 1))
    _, _, source = predict_satisfaction(model, x, scores, EMOTIONS)
    assert set(source) == {"rule:emotion_valence"}


def test_one_class_gives_no_model():
    x, _ = separable(15)
    model, reason = fit_satisfaction_model(x, ["satisfied"] * len(x))
    assert model is None and "2 classes" in reason


def test_a_class_with_one_label_gives_no_model():
    x, y = separable(15)
    y[0] = "angry customer"
    model, reason = fit_satisfaction_model(x, y)
    assert model is None and "angry customer" in reason


def test_enough_separable_labels_give_a_model_with_cv_metrics():
    x, y = separable(15)
    model, reason = fit_satisfaction_model(x, y, seed=0, model_id="tiny")
    assert isinstance(model, SatisfactionModel), reason
    assert model.n_labels == 30 and model.cv_splits == 5
    assert model.class_counts == (("dissatisfied", 15), ("satisfied", 15))
    assert model.cv_accuracy > 0.9 and model.cv_macro_f1 > 0.9
    assert "5-fold" in reason

    test_x, test_y = separable(10, seed=1)
    labels, prob, source = predict_satisfaction(model, test_x, np.zeros((20, 9)), EMOTIONS)
    assert source == ["model"] * 20
    assert np.mean(np.array(labels) == np.array(test_y)) > 0.9
    assert prob.dtype == np.float32 and ((prob >= 0.5) & (prob <= 1.0)).all()


def test_cv_splits_follow_the_smallest_class():
    x, y = separable(15)
    y = ["satisfied"] * 27 + ["dissatisfied"] * 3
    model, _ = fit_satisfaction_model(x, y)
    assert model is not None and model.cv_splits == 3


def test_fit_is_deterministic():
    x, y = separable(15)
    a, _ = fit_satisfaction_model(x, y, seed=3)
    b, _ = fit_satisfaction_model(x, y, seed=3)
    assert (a.cv_accuracy, a.cv_macro_f1) == (b.cv_accuracy, b.cv_macro_f1)
    np.testing.assert_array_equal(
        predict_satisfaction(a, x, np.zeros((30, 9)), EMOTIONS)[1],
        predict_satisfaction(b, x, np.zeros((30, 9)), EMOTIONS)[1],
    )


def test_width_mismatch_says_what_to_do():
    x, y = separable(15)
    model, _ = fit_satisfaction_model(x, y, model_id="tiny")
    with pytest.raises(ValueError, match=r"(?s)6-wide.*tiny.*re-materialize"):
        predict_satisfaction(model, np.zeros((2, 4)), np.zeros((2, 9)), EMOTIONS)


def test_rows_and_labels_must_match():
    with pytest.raises(ValueError, match="one embedding row per label"):
        fit_satisfaction_model(np.zeros((3, DIM)), ["a", "b"])


def test_save_load_round_trip(tmp_path):
    x, y = separable(15)
    model, _ = fit_satisfaction_model(x, y)
    path = tmp_path / "satisfaction_model.pkl"
    save_satisfaction_model(model, path)
    loaded = load_satisfaction_model(path)
    assert loaded.classes == model.classes and loaded.cv_accuracy == model.cv_accuracy
    np.testing.assert_array_equal(
        predict_satisfaction(loaded, x, np.zeros((30, 9)), EMOTIONS)[1],
        predict_satisfaction(model, x, np.zeros((30, 9)), EMOTIONS)[1],
    )


# --- label files ------------------------------------------------------------------------------


def test_read_labels_from_sorted_files(tmp_path):
    (tmp_path / "b.csv").write_text("source_path,label\n raw/x.wav , Dissatisfied \n")
    (tmp_path / "a.csv").write_text("\ufeffAudio_ID , label,notes\nabc,satisfied,ok\ndef, ,not yet\nghi,satisfied\n")
    (tmp_path / "ignored.txt").write_text("audio_id,label\nzzz,satisfied\n")
    assert read_labels(tmp_path) == [
        Label("satisfied", "abc", None, "a.csv", 2),
        Label("satisfied", "ghi", None, "a.csv", 4),
        Label("dissatisfied", None, "raw/x.wav", "b.csv", 2),
    ]


def test_missing_labels_folder_means_no_labels(tmp_path):
    assert read_labels(tmp_path / "labels") == []


@pytest.mark.parametrize(
    "content",
    ["audio_id,score\nabc,1\n", "recording,label\nabc,satisfied\n", ""],
)
def test_csv_without_required_columns_names_the_file(tmp_path, content):
    (tmp_path / "bad_labels.csv").write_text(content)
    with pytest.raises(ValueError, match="bad_labels.csv"):
        read_labels(tmp_path)


def test_labelled_row_without_any_id_names_file_and_line(tmp_path):
    (tmp_path / "labels.csv").write_text("audio_id,source_path,label\nabc,,satisfied\n,,satisfied\n")
    with pytest.raises(ValueError, match=r"labels.csv:3"):
        read_labels(tmp_path)


# --- duplicates: counted once, never on both sides of a fold ---------------------------------


def noise(n_recordings: int, copies: int, dim: int = 64, seed: int = 0):
    """Labels with no signal in the embeddings; every recording repeated ``copies`` times (the same
    bytes landed on several days give the very same embedding)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_recordings, dim))
    y = ["satisfied" if i % 2 else "dissatisfied" for i in range(n_recordings)]
    ids = [f"rec{i:03d}" for i in range(n_recordings)]
    return np.repeat(x, copies, axis=0), [v for v in y for _ in range(copies)], [a for a in ids for _ in range(copies)]


def test_duplicated_recordings_do_not_inflate_the_cv_score():
    x, y, groups = noise(40, copies=3)
    model, reason = fit_satisfaction_model(x, y, seed=0, groups=groups)
    assert model is not None, reason
    assert model.n_labels == 40 and model.n_rows == 120
    assert model.class_counts == (("dissatisfied", 20), ("satisfied", 20))
    # no signal: grouped CV scores chance, not the 1.0 of a copy seen in training
    assert model.cv_accuracy < 0.75 and model.cv_macro_f1 < 0.75
    assert "grouped cv" in reason

    # the same data with every copy its own "recording" (the old, ungrouped CV) scores memory
    leaky, _ = fit_satisfaction_model(x, y, seed=0)
    assert leaky.cv_accuracy > 0.95


def test_folds_never_split_a_recording(monkeypatch):
    from sklearn.model_selection import StratifiedGroupKFold

    x, y, groups = noise(30, copies=3)
    seen = []
    split = StratifiedGroupKFold.split

    def recording_split(self, X, y=None, groups=None):
        for train, test in split(self, X, y, groups):
            seen.append((train, test))
            yield train, test

    monkeypatch.setattr(StratifiedGroupKFold, "split", recording_split)
    fit_satisfaction_model(x, y, groups=groups)
    assert len(seen) == 5
    g = np.asarray(groups)
    for train, test in seen:
        assert not set(g[train]) & set(g[test])


def test_minimum_counts_distinct_recordings_not_rows():
    """22 label rows pointing to 8 recordings is 8 labels: not enough for a model."""
    x, y, groups = noise(8, copies=3)
    x, y, groups = x[:22], y[:22], groups[:22]
    model, reason = fit_satisfaction_model(x, y, groups=groups)
    assert model is None and "only 8 labelled recordings" in reason


def test_a_recording_with_two_labels_is_an_error():
    x, y, groups = noise(30, copies=2)
    y[1] = "satisfied" if y[0] == "dissatisfied" else "dissatisfied"
    with pytest.raises(ValueError, match="rec000 is labelled both"):
        fit_satisfaction_model(x, y, groups=groups)


def test_fit_satisfaction_versions_the_outcome_and_reports_duplicates_and_conflicts():
    import datetime as dt

    import pyarrow as pa

    from emo_assets.lib.analytics.recordings import distinct_recordings, join_labels
    from emo_assets.lib.analytics.satisfaction import fit_satisfaction

    x, y, ids = noise(24, copies=1, dim=DIM)
    recordings = distinct_recordings(pa.table({"audio_id": ids, "date": pa.array([dt.date(2026, 11, 28)] * 24)}))
    labels = [Label(v, a, None, "l.csv", i) for i, (v, a) in enumerate(zip(y * 3, ids * 3))]
    labels.append(Label("satisfied" if y[0] == "dissatisfied" else "dissatisfied", ids[0], None, "l.csv", 99))
    joined = join_labels(labels, recordings, x, {})
    fitted = fit_satisfaction(joined, model_id="tiny")
    assert fitted.model is not None and fitted.model.n_labels == 23  # rec000 has two labels: left out
    assert fitted.stats["n_recordings"] == 23 and fitted.stats["n_label_rows"] == 73
    assert fitted.stats["n_label_conflicts"] == 1
    assert fitted.stats["label_conflicts"][0]["audio_id"] == "rec000"
    assert fitted.model_version == fit_satisfaction(joined, model_id="tiny").model_version

    few = fit_satisfaction(join_labels(labels[:5], recordings, x, {}), model_id="tiny")
    assert few.model is None and few.stats["fitted"] is False and "only 5" in few.reason


def test_prediction_rows_carry_the_version_and_use_the_rule_without_a_model():
    import datetime as dt

    import pyarrow as pa

    from emo_assets.lib import schemas
    from emo_assets.lib.analytics.fitted import make_fitted
    from emo_assets.lib.analytics.satisfaction import prediction_rows

    day = dt.date(2026, 11, 28)
    embeddings = pa.table(
        {
            "audio_id": ["a", "b"],
            "date": pa.array([day, day]),
            "model_id": ["tiny", "tiny"],
            "embedding": pa.array([[0.0] * DIM, [1.0] * DIM], pa.list_(pa.float32(), DIM)),
        }
    )
    scores = pa.table(
        {"audio_id": ["a", "b"], "date": pa.array([day, day])}
        | {e: pa.array([p, 1 - p], pa.float32()) for e, p in zip(schemas.EMOTION_LABELS, [0.0] * 3 + [1.0] + [0.0] * 5)}
    )
    rule = make_fitted("satisfaction_model", None, "only 0 labelled recordings")
    rows, note = prediction_rows(rule, embeddings, scores)
    assert note is None
    assert rows.column("model_version").to_pylist() == [rule.model_version] * 2
    assert rows.column("source").to_pylist() == ["rule:emotion_valence"] * 2

    x, y = separable(15)
    model, _ = fit_satisfaction_model(x, y, model_id="base")  # another embedding model's vectors
    fitted = make_fitted("satisfaction_model", model, "fit")
    rows, note = prediction_rows(fitted, embeddings, scores)
    assert "fitted on base" in note and set(rows.column("source").to_pylist()) == {"rule:emotion_valence"}
    assert set(rows.column("model_version").to_pylist()) == {fitted.model_version}
    with pytest.raises(ValueError, match="differ"):
        prediction_rows(rule, embeddings, scores.slice(0, 1))
