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
