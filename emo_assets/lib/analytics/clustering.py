"""Unsupervised grouping of recordings by their emotion2vec+ embeddings.

Geometry: every embedding is L2-normalised before fitting and before assignment, so k-means on
the unit sphere groups recordings by cosine similarity (for unit vectors
``|a - b|**2 == 2 - 2 * cos(a, b)``), not by loudness-like differences in vector length.
A zero vector stays zero.

k is chosen by the silhouette score over ``k_range``; KMeans is seeded with a fixed ``n_init`` so
the same embeddings and seed always give the same model. A 2-D PCA of the same normalised data gives
the ``pca_x`` / ``pca_y`` columns used for plots.

Small inputs:
- no rows: ``ValueError``;
- fewer than 3 rows (the silhouette is undefined below 3) or a single distinct point: one cluster
  (``k == 1``) and ``silhouette is None``;
- no k in ``k_range`` that the data allows (2 <= k < N and k <= distinct points): also ``k == 1``.

:func:`fit_clusters` fits on distinct recordings (one row per ``audio_id``: the same bytes landed on
three days are one point, not three) and returns a versioned record (``fitted.FittedModel``);
:func:`cluster_rows` assigns a day with it, every row carrying the ``model_version``.

Models are pickled; only load files this project wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emo_assets.lib import schemas
from emo_assets.lib.analytics.fitted import FittedModel, load_fitted, make_fitted, save_fitted
from emo_assets.lib.analytics.recordings import distinct_recordings
from emo_assets.lib.store import lake

if TYPE_CHECKING:  # scikit-learn is imported where it is used: importing the assets stays fast
    from sklearn.cluster import KMeans

ASSET = "emotion_cluster_model"
KMEANS_N_INIT = 10
# The silhouette is O(N^2); above this many rows it is computed on a seeded sample.
SILHOUETTE_MAX_ROWS = 5000


@dataclass(frozen=True)
class ClusterModel:
    """A fitted clustering of L2-normalised embeddings from one embedding model.

    Holds the fitted numbers only (KMeans centres, the PCA mean and components), so assigning a
    day needs numpy alone. ``pca_components`` is None when the fitted data had fewer than 2 distinct
    points; projections are then (0, 0). ``silhouette_by_k`` lists the score of every k that was
    tried, for run metadata.
    """

    centres: np.ndarray  # [k, D] KMeans cluster centres in the normalised space
    pca_mean: np.ndarray | None  # [D]
    pca_components: np.ndarray | None  # [<=2, D]
    k: int
    silhouette: float | None
    n_fit: int
    embed_dim: int
    model_id: str
    silhouette_by_k: tuple[tuple[int, float], ...] = ()


def _as_matrix(embeddings: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D [N, D] embedding matrix, got shape {x.shape}")
    if x.size and not np.isfinite(x).all():
        raise ValueError(
            f"{what}: embeddings contain NaN or infinite values; re-materialize the embeddings for the affected days"
        )
    return x


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    """Return a new float32 matrix whose non-zero rows have unit length."""
    x = x.astype(np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _kmeans(k: int, seed: int) -> KMeans:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed)


def fit_cluster_model(
    embeddings: np.ndarray,
    model_id: str,
    k_range: range = range(2, 9),
    seed: int = 0,
) -> ClusterModel:
    """Fit KMeans on L2-normalised ``embeddings`` [N, D], choosing k by silhouette score.

    Ties between k values go to the smaller k. See the module docstring for small inputs.
    """
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    x = _as_matrix(embeddings, "fit_cluster_model")
    n, dim = x.shape
    if n == 0:
        raise ValueError(
            "fit_cluster_model: no embeddings to cluster; materialize emotion_embeddings for at "
            "least one day with audio first"
        )
    xn = _l2_normalise(x)
    n_distinct = len(np.unique(xn, axis=0))
    candidates = [k for k in k_range if 2 <= k < n and k <= n_distinct]

    best_k, best_score, best_km = 1, None, None
    scores: list[tuple[int, float]] = []
    if n >= 3 and candidates:
        sample = SILHOUETTE_MAX_ROWS if n > SILHOUETTE_MAX_ROWS else None
        for k in candidates:
            km = _kmeans(k, seed).fit(xn)
            if len(np.unique(km.labels_)) < 2:
                continue
            score = float(silhouette_score(xn, km.labels_, sample_size=sample, random_state=seed))
            scores.append((k, score))
            if best_score is None or score > best_score:
                best_k, best_score, best_km = k, score, km
    if best_km is None:
        best_k, best_score, best_km = 1, None, _kmeans(1, seed).fit(xn)

    pca = None
    if n_distinct >= 2:
        pca = PCA(n_components=min(2, n, dim), svd_solver="full", random_state=seed).fit(xn)

    return ClusterModel(
        centres=np.asarray(best_km.cluster_centers_, dtype=np.float64),
        pca_mean=None if pca is None else np.asarray(pca.mean_, dtype=np.float64),
        pca_components=None if pca is None else np.asarray(pca.components_, dtype=np.float64),
        k=best_k,
        silhouette=best_score,
        n_fit=n,
        embed_dim=dim,
        model_id=model_id,
        silhouette_by_k=tuple(scores),
    )


def assign_clusters(model: ClusterModel, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign each row of ``embeddings`` [N, D] to its nearest centroid.

    Returns ``(cluster_id int32 [N], pca_xy float32 [N, 2], distance float32 [N])`` where
    ``distance`` is the Euclidean distance to the assigned centroid in the normalised space.
    """
    x = _as_matrix(embeddings, "assign_clusters")
    if x.shape[1] != model.embed_dim:
        raise ValueError(
            f"assign_clusters: embeddings are {x.shape[1]}-wide but the cluster model was fitted "
            f"on {model.embed_dim}-wide embeddings from model {model.model_id!r}; re-materialize "
            "emotion_cluster_model with the current embedding model"
        )
    n = x.shape[0]
    if n == 0:
        return (
            np.zeros(0, np.int32),
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
        )
    xn = _l2_normalise(x).astype(np.float64)
    # Nearest centre (what KMeans.predict computes) and PCA.transform, in numpy.
    squared = (xn**2).sum(axis=1)[:, None] - 2 * xn @ model.centres.T + (model.centres**2).sum(axis=1)[None, :]
    cluster_id = squared.argmin(axis=1).astype(np.int32)
    distance = np.linalg.norm(xn - model.centres[cluster_id], axis=1).astype(np.float32)
    pca_xy = np.zeros((n, 2), np.float32)
    if model.pca_components is not None:
        projected = (xn - model.pca_mean) @ model.pca_components.T
        pca_xy[:, : projected.shape[1]] = projected
    return cluster_id, pca_xy, distance


def _reason(model: ClusterModel) -> str:
    return f"k={model.k} on {model.n_fit} distinct recordings of {model.model_id}"


def fit_clusters(embeddings: pa.Table, seed: int = 0) -> FittedModel:
    """Fit on the distinct recordings of ``embeddings`` (lake rows of one embedding model).

    ``stats`` reports the embedding rows read and the distinct recordings fitted.
    """
    if embeddings.num_rows == 0:
        raise ValueError("fit_clusters: no embeddings; materialize emotion_embeddings for a day with audio first")
    model_ids = embeddings.column("model_id").unique().to_pylist()
    if len(model_ids) != 1:
        raise ValueError(f"fit_clusters: embeddings of several models {sorted(model_ids)}; fit one model's rows")
    recordings = distinct_recordings(embeddings)
    model = fit_cluster_model(lake.embedding_matrix(recordings), model_id=model_ids[0], seed=seed)
    reason = _reason(model)
    stats = {
        "k": model.k,
        "silhouette": model.silhouette,
        "silhouette_by_k": {str(k): s for k, s in model.silhouette_by_k},
        "n_recordings": model.n_fit,
        "n_embedding_rows": embeddings.num_rows,
        "model_id": model.model_id,
    }
    return make_fitted(ASSET, model, reason, stats)


def cluster_rows(fitted: FittedModel, embeddings: pa.Table) -> pa.Table:
    """One day's ``emotion_clusters`` rows, each carrying ``fitted.model_version``.

    Only rows of the embedding model the clusters were fitted on are assigned.
    """
    model: ClusterModel = fitted.model
    embeddings = embeddings.filter(pc.equal(embeddings.column("model_id"), model.model_id))
    cluster_id, xy, distance = assign_clusters(model, lake.embedding_matrix(embeddings))
    return pa.table(
        {
            "audio_id": embeddings.column("audio_id"),
            "date": embeddings.column("date"),
            "cluster_id": pa.array(cluster_id, pa.int32()),
            "pca_x": pa.array(xy[:, 0], pa.float32()),
            "pca_y": pa.array(xy[:, 1], pa.float32()),
            "distance": pa.array(distance, pa.float32()),
            "model_version": pa.array([fitted.model_version] * embeddings.num_rows, pa.string()),
        },
        schema=schemas.EMOTION_CLUSTERS,
    )


def save_cluster_model(model: ClusterModel, path: Path, stats: dict | None = None) -> FittedModel:
    """Write ``model`` to ``path`` atomically, versioned; returns the record written."""
    fitted = make_fitted(ASSET, model, _reason(model), stats)
    save_fitted(fitted, path)
    return fitted


def load_fitted_cluster_model(path: Path) -> FittedModel:
    """Read the versioned record written by :func:`save_cluster_model` or ``fitted.save_fitted``."""
    fitted = load_fitted(path, ClusterModel, ASSET)
    if fitted.model is None:
        raise TypeError(f"{path} holds no cluster model; refit: emo run --date DAY --refit-models")
    return fitted


def load_cluster_model(path: Path) -> ClusterModel:
    """Read the model written by :func:`save_cluster_model`."""
    return load_fitted_cluster_model(path).model
