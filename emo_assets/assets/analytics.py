"""Embeddings -> cluster model and daily cluster assignments; labels -> satisfaction model and
daily predictions. The models are fitted on every day; a day is assigned with the current model."""

from collections import Counter

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emo_assets.lib import schemas
from emo_assets.lib.analytics.clustering import (
    assign_clusters,
    fit_cluster_model,
    load_cluster_model,
    save_cluster_model,
)
from emo_assets.lib.analytics.satisfaction import (
    fit_satisfaction_model,
    load_satisfaction_model,
    predict_satisfaction,
    read_labels,
    save_satisfaction_model,
)
from emo_assets.lib.results import plots
from emo_assets.lib.store import lake, warehouse
from emo_assets.partitions import daily_partitions
from emo_assets.resources import StorageResource

EMBEDDINGS = dg.AssetKey("emotion_embeddings")
SCORES = dg.AssetKey("emotion_scores")


def _all_embeddings(storage: StorageResource) -> pa.Table:
    table = lake.read_table(storage.lake_dir, "emotion_embeddings")
    if table is None or table.num_rows == 0:
        raise dg.Failure("no emotion_embeddings yet: materialize a day of emotion_embeddings first")
    return lake.newest_model_rows(table)


def _day_embeddings(storage: StorageResource, day: str) -> pa.Table:
    table = lake.read_partition(storage.lake_dir, "emotion_embeddings", day)
    if table is None:
        raise dg.Failure(f"no emotion_embeddings for {day}: materialize emotion_embeddings for this day first")
    return table


@dg.asset(deps=[EMBEDDINGS], group_name="analytics", kinds={"scikitlearn"})
def emotion_cluster_model(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """KMeans over every day's embeddings (k chosen by silhouette) plus a 2-D PCA."""
    embeddings = _all_embeddings(storage)
    model_id = embeddings.column("model_id")[0].as_py()
    matrix = lake.embedding_matrix(embeddings)
    model = fit_cluster_model(matrix, model_id=model_id)
    path = storage.models_dir / "emotion_cluster_model.pkl"
    save_cluster_model(model, path)
    cluster_id, xy, _ = assign_clusters(model, matrix)
    png = plots.cluster_scatter_png(xy, cluster_id, f"{model.n_fit} embeddings of {model_id}, k={model.k}")
    png_path = plots.write_png(storage.reports_dir / "emotion_cluster_model_pca.png", png)
    context.log.info(f"fitted k={model.k} on {model.n_fit} embeddings of {model_id}")
    return dg.MaterializeResult(
        metadata={
            "k": model.k,
            "silhouette": dg.MetadataValue.float(model.silhouette if model.silhouette is not None else float("nan")),
            "silhouette_by_k": dg.MetadataValue.json({str(k): s for k, s in model.silhouette_by_k}),
            "n_fit": model.n_fit,
            "model_id": model_id,
            "path": dg.MetadataValue.path(str(path)),
            "pca_scatter": dg.MetadataValue.md(plots.markdown_image(png, "PCA of the embeddings by cluster")),
            "pca_scatter_path": dg.MetadataValue.path(str(png_path)),
        }
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[emotion_cluster_model, EMBEDDINGS],
    group_name="analytics",
    kinds={"duckdb"},
)
def emotion_clusters(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The day's recordings assigned to the current cluster model (DuckDB table)."""
    day = context.partition_key
    path = storage.models_dir / "emotion_cluster_model.pkl"
    if not path.exists():
        raise dg.Failure(f"no cluster model at {path}: materialize emotion_cluster_model first")
    model = load_cluster_model(path)
    embeddings = _day_embeddings(storage, day)
    embeddings = embeddings.filter(pc.equal(embeddings.column("model_id"), model.model_id))
    cluster_id, xy, distance = assign_clusters(model, lake.embedding_matrix(embeddings))
    rows = pa.table(
        {
            "audio_id": embeddings.column("audio_id"),
            "date": embeddings.column("date"),
            "cluster_id": pa.array(cluster_id, pa.int32()),
            "pca_x": pa.array(xy[:, 0], pa.float32()),
            "pca_y": pa.array(xy[:, 1], pa.float32()),
            "distance": pa.array(distance, pa.float32()),
        }
    )
    with warehouse.connect(storage.warehouse_path) as con:
        warehouse.replace_day(con, "emotion_clusters", day, rows)
    return dg.MaterializeResult(
        metadata={
            "row_count": rows.num_rows,
            "cluster_sizes": dg.MetadataValue.json(
                {str(k): v for k, v in sorted(Counter(cluster_id.tolist()).items())}
            ),
            "cluster_model_k": model.k,
        }
    )


def _labelled_rows(storage: StorageResource, embeddings: pa.Table) -> tuple[np.ndarray, list[str]]:
    labels = read_labels(storage.labels_dir)
    audio_files = lake.read_table(storage.lake_dir, "audio_files")
    by_source = {}
    if audio_files is not None:
        by_source = dict(zip(audio_files.column("source_path").to_pylist(), audio_files.column("audio_id").to_pylist()))
    index = {audio_id: i for i, audio_id in enumerate(embeddings.column("audio_id").to_pylist())}
    matrix = lake.embedding_matrix(embeddings)
    rows, y = [], []
    for label in labels:
        audio_id = label.audio_id or by_source.get(label.source_path or "")
        if audio_id in index:
            rows.append(index[audio_id])
            y.append(label.label)
    return matrix[rows], y


@dg.asset(deps=[EMBEDDINGS], group_name="analytics", kinds={"scikitlearn"})
def satisfaction_model(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """A classifier on embeddings and the labels in ``data/labels/*.csv``, cross-validated."""
    embeddings = _all_embeddings(storage)
    model_id = embeddings.column("model_id")[0].as_py()
    # The same recording may have landed on several days: one row per recording.
    embeddings = embeddings.sort_by([("audio_id", "ascending"), ("date", "ascending")])
    keep = np.unique(np.asarray(embeddings.column("audio_id").to_pylist()), return_index=True)[1]
    embeddings = embeddings.take(pa.array(keep))
    X, y = _labelled_rows(storage, embeddings)
    model, reason = fit_satisfaction_model(X, y, seed=0, model_id=model_id)
    path = storage.models_dir / "satisfaction_model.pkl"
    if model is None:
        path.unlink(missing_ok=True)
        context.log.warning(f"no satisfaction model: {reason}; predictions use the emotion-valence rule")
        return dg.MaterializeResult(
            metadata={"fitted": False, "reason": reason, "n_labels": len(y), "model_id": model_id}
        )
    save_satisfaction_model(model, path)
    return dg.MaterializeResult(
        metadata={
            "fitted": True,
            "n_labels": model.n_labels,
            "classes": dg.MetadataValue.json(dict(model.class_counts)),
            "cv_accuracy": dg.MetadataValue.float(model.cv_accuracy),
            "cv_macro_f1": dg.MetadataValue.float(model.cv_macro_f1),
            "cv_splits": model.cv_splits,
            "model_id": model_id,
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[satisfaction_model, EMBEDDINGS, SCORES],
    group_name="analytics",
    kinds={"duckdb"},
)
def satisfaction_predictions(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Satisfaction per recording of the day: the model's prediction, or the rule's (``source`` says which)."""
    day = context.partition_key
    path = storage.models_dir / "satisfaction_model.pkl"
    model = load_satisfaction_model(path) if path.exists() else None
    embeddings = _day_embeddings(storage, day)
    scores = lake.read_partition(storage.lake_dir, "emotion_scores", day)
    if model is not None and model.model_id not in (None, *embeddings.column("model_id").unique().to_pylist()):
        context.log.warning(f"satisfaction model was fitted on {model.model_id}; using the rule for {day}")
        model = None
    if scores is None or scores.column("audio_id").to_pylist() != embeddings.column("audio_id").to_pylist():
        raise dg.Failure(f"emotion_scores and emotion_embeddings of {day} differ: re-materialize them together")
    score_matrix = np.column_stack([scores.column(c).to_numpy() for c in schemas.EMOTION_LABELS]).reshape(-1, 9)
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
        }
    )
    with warehouse.connect(storage.warehouse_path) as con:
        warehouse.replace_day(con, "satisfaction_predictions", day, rows)
    return dg.MaterializeResult(
        metadata={
            "row_count": rows.num_rows,
            "source": dg.MetadataValue.text(source[0] if source else "none"),
            "labels": dg.MetadataValue.json(dict(Counter(label))),
        }
    )
