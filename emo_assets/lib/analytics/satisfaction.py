"""Customer satisfaction per recording: a classifier on embeddings once people have labelled
enough recordings, a rule over the emotion scores until then.

Labels come from ``data/labels/*.csv``: a ``label`` column plus ``audio_id`` or ``source_path``.
With at least ``MIN_LABELS`` labelled distinct recordings, two or more classes and
``MIN_LABELS_PER_CLASS`` recordings in every class, :func:`fit_satisfaction_model` trains
StandardScaler + LogisticRegression on the embeddings and reports cross-validation scores, with
folds stratified by class and grouped by recording (a recording is never in a training and a test
fold at once); otherwise it returns no model and the reason, and :func:`predict_satisfaction` falls
back to the rule (see :func:`satisfaction_rule`).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.analytics.fitted import FittedModel, load_fitted, make_fitted, save_fitted
from emo_assets.lib.store import lake

if TYPE_CHECKING:  # scikit-learn is imported where it is used: importing the assets stays fast
    from sklearn.pipeline import Pipeline

    from emo_assets.lib.analytics.recordings import LabelledRecordings

ASSET = "satisfaction_model"

# Counted in distinct recordings, not label rows.
MIN_LABELS = 20
# Stratified cross-validation needs every class in at least two folds.
MIN_LABELS_PER_CLASS = 2
MAX_CV_SPLITS = 5
LOGREG_MAX_ITER = 5000

RULE_SOURCE = "rule:emotion_valence"
MODEL_SOURCE = "model"
SATISFIED = "satisfied"
DISSATISFIED = "dissatisfied"
POSITIVE_EMOTIONS = ("happy", "neutral")
NEGATIVE_EMOTIONS = ("angry", "disgusted", "fearful", "sad")

_ID_COLUMNS = ("audio_id", "source_path")


@dataclass(frozen=True)
class Label:
    """One labelled recording. At least one of ``audio_id`` / ``source_path`` is set."""

    label: str
    audio_id: str | None
    source_path: str | None
    file: str
    line: int


def read_labels(labels_dir: Path) -> list[Label]:
    """Read every ``*.csv`` in ``labels_dir`` (sorted by file name, rows in file order).

    Headers and values are stripped of whitespace; headers are matched case-insensitively and
    labels are lower-cased so ``"Satisfied "`` and ``"satisfied"`` are one class. Rows with a blank
    label are skipped (not labelled yet). A missing folder means no labels. Raises ``ValueError``
    naming the file for a CSV without a ``label`` column and an ``audio_id`` or ``source_path``
    column, or for a labelled row with neither id.
    """
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        return []
    out: list[Label] = []
    for path in sorted(labels_dir.glob("*.csv")):
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if "label" not in header or not any(c in header for c in _ID_COLUMNS):
                raise ValueError(
                    f"{path}: a labels CSV needs a 'label' column and an 'audio_id' or "
                    f"'source_path' column; found columns {header}"
                )
            col = {name: header.index(name) for name in ("label", *_ID_COLUMNS) if name in header}
            for line, row in enumerate(reader, start=2):
                cell = {name: (row[i].strip() if i < len(row) else "") for name, i in col.items()}
                if not cell["label"]:
                    continue
                audio_id = cell.get("audio_id") or None
                source_path = cell.get("source_path") or None
                if audio_id is None and source_path is None:
                    raise ValueError(
                        f"{path}:{line}: label {cell['label']!r} has neither an audio_id nor a "
                        "source_path; fill one in or delete the row"
                    )
                out.append(Label(cell["label"].lower(), audio_id, source_path, path.name, line))
    return out


@dataclass(frozen=True)
class SatisfactionModel:
    """A fitted classifier plus how well it cross-validated.

    ``n_labels`` and ``class_counts`` count distinct recordings (groups); ``n_rows`` the rows fitted.
    """

    pipeline: Pipeline
    classes: tuple[str, ...]
    n_labels: int
    class_counts: tuple[tuple[str, int], ...]
    cv_splits: int
    cv_accuracy: float
    cv_macro_f1: float
    embed_dim: int
    model_id: str | None = None
    n_rows: int = 0


def fit_satisfaction_model(
    X: np.ndarray,
    y: Sequence[str],
    seed: int = 0,
    model_id: str | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[SatisfactionModel | None, str]:
    """Fit StandardScaler + LogisticRegression on embeddings ``X`` [N, D] and labels ``y``.

    ``groups`` names the recording of every row (its ``audio_id``); without it every row is its
    own recording. Labels are counted in recordings: ``model`` is None when there are fewer than
    ``MIN_LABELS`` recordings, fewer than 2 classes or a class with fewer than
    ``MIN_LABELS_PER_CLASS`` recordings, and ``reason`` says which. A recording with two labels is
    an error (resolve it first, see ``recordings.join_labels``). Cross-validation uses
    scikit-learn's ``StratifiedGroupKFold`` shuffled with ``seed``, with
    ``n_splits = min(5, smallest class count)``, so no recording is in a training and a test fold
    at once; the returned pipeline is then fitted on all rows.
    """
    X = np.asarray(X)
    y = [str(v) for v in y]
    if X.ndim != 2 or X.shape[0] != len(y):
        raise ValueError(
            f"fit_satisfaction_model: X has shape {X.shape} but there are {len(y)} labels; "
            "pass one embedding row per label"
        )
    groups = [str(i) for i in range(len(y))] if groups is None else [str(g) for g in groups]
    if len(groups) != len(y):
        raise ValueError(f"fit_satisfaction_model: {len(groups)} groups for {len(y)} labels; pass one per row")
    label_of: dict[str, str] = {}
    for group, label in zip(groups, y):
        if label_of.setdefault(group, label) != label:
            raise ValueError(
                f"fit_satisfaction_model: recording {group} is labelled both {label_of[group]!r} and "
                f"{label!r}; resolve the conflict in the labels CSVs"
            )
    counts = Counter(label_of.values())
    n = len(label_of)
    if n < MIN_LABELS:
        return None, f"only {n} labelled recordings; need at least {MIN_LABELS}"
    if len(counts) < 2:
        return None, f"all {n} labelled recordings are {next(iter(counts))!r}; need at least 2 classes"
    rare = sorted(c for c, k in counts.items() if k < MIN_LABELS_PER_CLASS)
    if rare:
        return None, (
            f"classes {rare} have fewer than {MIN_LABELS_PER_CLASS} labelled recordings; "
            "label more recordings of those classes"
        )

    n_splits = max(2, min(MAX_CV_SPLITS, min(counts.values())))
    from sklearn.model_selection import StratifiedGroupKFold, cross_validate

    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = cross_validate(_pipeline(seed), X, y, groups=groups, cv=cv, scoring=("accuracy", "f1_macro"), n_jobs=1)
    pipeline = _pipeline(seed).fit(X, y)
    model = SatisfactionModel(
        pipeline=pipeline,
        classes=tuple(str(c) for c in pipeline.classes_),
        n_labels=n,
        class_counts=tuple(sorted(counts.items())),
        cv_splits=n_splits,
        cv_accuracy=float(np.mean(scores["test_accuracy"])),
        cv_macro_f1=float(np.mean(scores["test_f1_macro"])),
        embed_dim=X.shape[1],
        model_id=model_id,
        n_rows=len(y),
    )
    reason = (
        f"fitted on {n} labelled recordings in {len(counts)} classes; {n_splits}-fold grouped cv "
        f"accuracy {model.cv_accuracy:.3f}, macro-F1 {model.cv_macro_f1:.3f}"
    )
    return model, reason


def fit_satisfaction(labelled: LabelledRecordings, model_id: str, seed: int = 0) -> FittedModel:
    """Fit on labels joined to distinct recordings; the versioned outcome, model or not.

    ``stats`` reports the recordings fitted, the label rows read and unmatched, and every label
    conflict (one recording, two labels), which is left out of the fit.
    """
    model, reason = fit_satisfaction_model(
        labelled.matrix, labelled.labels, seed=seed, model_id=model_id, groups=labelled.audio_ids
    )
    stats = {
        "fitted": model is not None,
        "n_recordings": labelled.n_recordings,
        "n_label_rows": labelled.n_label_rows,
        "n_unmatched_label_rows": labelled.n_unmatched_rows,
        "n_label_conflicts": len(labelled.conflicts),
        "label_conflicts": [
            {"audio_id": c.audio_id, "labels": list(c.labels), "rows": list(c.rows)} for c in labelled.conflicts
        ],
        "model_id": model_id,
    }
    if model is not None:
        stats |= {
            "classes": dict(model.class_counts),
            "cv_accuracy": model.cv_accuracy,
            "cv_macro_f1": model.cv_macro_f1,
            "cv_splits": model.cv_splits,
        }
    return make_fitted(ASSET, model, reason, stats)


def _pipeline(seed: int) -> Pipeline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=LOGREG_MAX_ITER, random_state=seed),
    )


def satisfaction_rule(scores: np.ndarray, emotion_labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Emotion-valence rule used until enough recordings are labelled.

    positive = P(happy) + P(neutral)
    negative = P(angry) + P(disgusted) + P(fearful) + P(sad)
    label = "satisfied" if positive >= negative else "dissatisfied"
    probability = max(positive, negative) / (positive + negative), or 0.5 when both are 0.
    surprised, other and unknown are ignored: their valence is ambiguous.

    ``scores`` is [N, len(emotion_labels)] with columns in the order of ``emotion_labels``.
    Returns ``(labels, probability float32 [N])``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    emotion_labels = list(emotion_labels)
    if scores.ndim != 2 or scores.shape[1] != len(emotion_labels):
        raise ValueError(
            f"satisfaction_rule: scores have shape {scores.shape} but there are "
            f"{len(emotion_labels)} emotion labels {emotion_labels}"
        )
    missing = [e for e in (*POSITIVE_EMOTIONS, *NEGATIVE_EMOTIONS) if e not in emotion_labels]
    if missing:
        raise ValueError(f"satisfaction_rule: emotion labels {emotion_labels} lack {missing}")
    if not np.isfinite(scores).all() or (scores < 0).any():
        raise ValueError("satisfaction_rule: emotion scores must be finite and non-negative")
    positive = scores[:, [emotion_labels.index(e) for e in POSITIVE_EMOTIONS]].sum(axis=1)
    negative = scores[:, [emotion_labels.index(e) for e in NEGATIVE_EMOTIONS]].sum(axis=1)
    satisfied = positive >= negative
    total = positive + negative
    winner = np.where(satisfied, positive, negative)
    probability = np.full(len(scores), 0.5)
    np.divide(winner, total, out=probability, where=total > 0)
    labels = [SATISFIED if s else DISSATISFIED for s in satisfied]
    return labels, probability.astype(np.float32)


def predict_satisfaction(
    model: SatisfactionModel | None,
    embeddings: np.ndarray,
    scores: np.ndarray,
    emotion_labels: Sequence[str],
) -> tuple[list[str], np.ndarray, list[str]]:
    """Predict one satisfaction label per recording.

    With a model: label = the most probable class, probability = its predicted probability,
    source = ``"model"``. Without: :func:`satisfaction_rule` on ``scores`` (columns in the order of
    ``emotion_labels``), source = ``"rule:emotion_valence"``.
    Returns ``(label list[str], probability float32 [N], source list[str])``.
    """
    if model is None:
        labels, probability = satisfaction_rule(scores, emotion_labels)
        return labels, probability, [RULE_SOURCE] * len(labels)
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[1] != model.embed_dim:
        raise ValueError(
            f"predict_satisfaction: embeddings have shape {x.shape} but the satisfaction model "
            f"was fitted on {model.embed_dim}-wide embeddings from model {model.model_id!r}; "
            "re-materialize satisfaction_model with the current embedding model"
        )
    if x.shape[0] == 0:
        return [], np.zeros(0, np.float32), []
    proba = model.pipeline.predict_proba(x)
    best = proba.argmax(axis=1)
    classes = model.pipeline.classes_
    labels = [str(classes[i]) for i in best]
    probability = proba[np.arange(len(best)), best].astype(np.float32)
    return labels, probability, [MODEL_SOURCE] * len(labels)


def prediction_rows(fitted: FittedModel, embeddings: pa.Table, scores: pa.Table) -> tuple[pa.Table, str | None]:
    """One day's ``satisfaction_predictions`` rows, each carrying ``fitted.model_version``.

    ``embeddings`` and ``scores`` are the day's lake rows, recording for recording. A model fitted
    on another embedding model's vectors is not used: the rule predicts, and the returned note says
    why (None otherwise).
    """
    if scores.column("audio_id").to_pylist() != embeddings.column("audio_id").to_pylist():
        raise ValueError("emotion_scores and emotion_embeddings of the day differ: re-materialize them together")
    model, note = fitted.model, None
    if model is not None and model.model_id not in (None, *embeddings.column("model_id").unique().to_pylist()):
        note = f"satisfaction model {fitted.model_version} was fitted on {model.model_id}; the rule predicts"
        model = None
    score_matrix = np.column_stack([scores.column(c).to_numpy() for c in schemas.EMOTION_LABELS]).reshape(
        -1, len(schemas.EMOTION_LABELS)
    )
    label, probability, source = predict_satisfaction(
        model, lake.embedding_matrix(embeddings), score_matrix, schemas.EMOTION_LABELS
    )
    rows = pa.table(
        {
            "audio_id": scores.column("audio_id"),
            "date": scores.column("date"),
            "label": pa.array(label, pa.string()),
            "probability": pa.array(probability, pa.float32()),
            "source": pa.array(source, pa.string()),
            "model_version": pa.array([fitted.model_version] * scores.num_rows, pa.string()),
        },
        schema=schemas.SATISFACTION_PREDICTIONS,
    )
    return rows, note


def save_satisfaction_model(
    model: SatisfactionModel | None, path: Path, reason: str = "", stats: dict | None = None
) -> FittedModel:
    """Write ``model`` (None: the rule predicts) to ``path`` atomically, versioned; returns the record."""
    fitted = make_fitted(ASSET, model, reason, stats)
    save_fitted(fitted, path)
    return fitted


def load_fitted_satisfaction_model(path: Path) -> FittedModel:
    """Read the versioned record written by :func:`save_satisfaction_model` or :func:`fit_satisfaction`."""
    return load_fitted(path, SatisfactionModel, ASSET)


def load_satisfaction_model(path: Path) -> SatisfactionModel | None:
    """Read the model written by :func:`save_satisfaction_model` (None: no model, the rule predicts)."""
    return load_fitted_satisfaction_model(path).model
