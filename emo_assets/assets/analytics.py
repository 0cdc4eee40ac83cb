"""Embeddings -> cluster model and daily cluster assignments; labels -> satisfaction model and
daily predictions.

A model is fitted once and then kept: materializing a model asset fits only when no fitted file
exists or when the run asks for a refit (``models_job``, ``emo run --refit-models``, or
``refit: true`` in the launchpad). A fit and every day's assignment hold the models folder's lock,
and every fit re-assigns each day already in the warehouse, so a table holds one ``model_version``
whatever runs in parallel (see lib/analytics/fitted.py).
"""

from collections import Counter

import dagster as dg
import pyarrow as pa
from pydantic import Field

from emo_assets.assets.metadata import table_definition_metadata
from emo_assets.assets.rebuild import ensure_warehouse
from emo_assets.assets.repair import claim_day
from emo_assets.lib.analytics import assign, clustering, recordings, satisfaction
from emo_assets.lib.analytics.fitted import FittedModel
from emo_assets.lib.results import plots
from emo_assets.lib.store import lake
from emo_assets.partitions import daily_partitions
from emo_assets.resources import StorageResource

EMBEDDINGS = dg.AssetKey("emotion_embeddings")
SCORES = dg.AssetKey("emotion_scores")


class ModelFitConfig(dg.Config):
    refit: bool = Field(
        default=False,
        description="Fit anew even if a fitted model exists, and re-assign every day in the warehouse with it.",
    )


def _all_embeddings(storage: StorageResource) -> pa.Table:
    every_side = lake.read_table(storage.lake_dir, "emotion_embeddings")
    if every_side is None or every_side.num_rows == 0:
        raise dg.Failure("no emotion_embeddings yet: materialize a day of emotion_embeddings first")
    table = lake.voice_rows(every_side)
    if table.num_rows == 0:
        raise dg.Failure(
            f"nothing to fit on yet: the {every_side.num_rows} embedding(s) so far are all of agents' sides of "
            "two-channel calls, and the models are fitted on the side that stands for a call (the customer's, "
            "or a mono recording); run a day with such speech first"
        )
    return lake.newest_model_rows(table)


def _assign_day(storage: StorageResource, model_asset: str, load, table: str, day: str, rows_for_day):
    """``day`` of ``table`` assigned with the fitted model of ``model_asset`` (lib/analytics/assign.py);
    a model never fitted fails the run with what to materialize."""

    def checked(path) -> FittedModel:
        if not path.exists():
            raise dg.Failure(f"no fitted model at {path}: materialize {model_asset} first")
        return load(path)

    path = storage.fitted_model_path(model_asset)
    return assign.assign_day(path, checked, storage.warehouse_path, table, day, rows_for_day)


def _fit_satisfaction(storage: StorageResource) -> FittedModel:
    embeddings = recordings.distinct_recordings(_all_embeddings(storage))
    labelled = recordings.join_labels(
        satisfaction.read_labels(storage.labels_dir),
        embeddings,
        lake.embedding_matrix(embeddings),
        recordings.audio_id_by_source(lake.read_table(storage.lake_dir, "audio_files")),
    )
    return satisfaction.fit_satisfaction(labelled, model_id=embeddings.column("model_id")[0].as_py())


def _model_metadata(fitted: FittedModel, path, refitted: bool, reassigned: dict) -> dict:
    stats = {k: v for k, v in fitted.stats.items() if v is not None}
    return {
        "model_version": fitted.model_version,
        "fitted_at": fitted.fitted_at,
        "refitted": refitted,
        "reason": dg.MetadataValue.text(fitted.reason),
        **{k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in stats.items()},
        **reassigned,
        "path": dg.MetadataValue.path(str(path)),
    }


def _reassigned_metadata(table: str, result: assign.Reassigned) -> dict:
    return {
        f"{table}_days_reassigned": len(result.days),
        f"{table}_rows_reassigned": result.row_count,
        f"{table}_days_dropped": dg.MetadataValue.json(list(result.dropped_days)),
    }


@dg.asset(deps=[EMBEDDINGS], group_name="analytics", kinds={"scikitlearn"})
def emotion_cluster_model(
    context: dg.AssetExecutionContext, config: ModelFitConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """KMeans over every day's distinct recordings (k chosen by silhouette) plus a 2-D PCA, versioned.
    Kept once fitted; a refit re-assigns every day of emotion_clusters."""
    path = storage.fitted_model_path(clustering.ASSET)
    embeddings = None
    ensure_warehouse(context, storage)

    def fit() -> FittedModel:
        nonlocal embeddings
        embeddings = _all_embeddings(storage)
        return clustering.fit_clusters(embeddings)

    fitted, reassigned = assign.fit_or_keep(
        path,
        clustering.load_fitted_cluster_model,
        fit,
        config.refit,
        storage.warehouse_path,
        "emotion_clusters",
        lambda f, day: assign.cluster_rows_for_day(f, storage.lake_dir, day),
    )
    if reassigned is None:
        context.log.info(f"cluster model {fitted.model_version} exists: kept (models_job refits)")
        return dg.MaterializeResult(metadata=_model_metadata(fitted, path, False, {}))
    if reassigned.dropped_days:
        context.log.warning(f"emotion_clusters of {list(reassigned.dropped_days)} dropped: their embeddings are gone")
    model = fitted.model
    distinct = recordings.distinct_recordings(embeddings)
    cluster_id, xy, _ = clustering.assign_clusters(model, lake.embedding_matrix(distinct))
    title = f"{model.n_fit} recordings of {model.model_id}, k={model.k}, version {fitted.model_version}"
    png = plots.cluster_scatter_png(xy, cluster_id, title)
    png_path = plots.write_png(storage.reports_dir / "emotion_cluster_model_pca.png", png)
    context.log.info(f"fitted {fitted.model_version}: {fitted.reason}")
    metadata = _model_metadata(fitted, path, True, _reassigned_metadata("emotion_clusters", reassigned))
    metadata["silhouette"] = dg.MetadataValue.float(model.silhouette if model.silhouette is not None else float("nan"))
    metadata["n_fit"] = model.n_fit
    metadata["pca_scatter"] = dg.MetadataValue.md(plots.markdown_image(png, "PCA of the embeddings by cluster"))
    metadata["pca_scatter_path"] = dg.MetadataValue.path(str(png_path))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[emotion_cluster_model, EMBEDDINGS],
    group_name="analytics",
    kinds={"duckdb"},
    metadata=table_definition_metadata("emotion_clusters"),
)
def emotion_clusters(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The day's recordings assigned to the fitted cluster model; every row has its model_version."""
    day = claim_day(context, storage)
    ensure_warehouse(context, storage)
    fitted, rows = _assign_day(
        storage,
        clustering.ASSET,
        clustering.load_fitted_cluster_model,
        "emotion_clusters",
        day,
        lambda f, d: assign.cluster_rows_for_day(f, storage.lake_dir, d),
    )
    if rows is None:
        raise dg.Failure(f"no emotion_embeddings for {day}: materialize emotion_embeddings for this day first")
    sizes = Counter(rows.column("cluster_id").to_pylist())
    return dg.MaterializeResult(
        metadata={
            "row_count": rows.num_rows,
            "cluster_sizes": dg.MetadataValue.json({str(k): v for k, v in sorted(sizes.items())}),
            "cluster_model_k": fitted.model.k,
            "model_version": fitted.model_version,
        }
    )


@dg.asset(deps=[EMBEDDINGS], group_name="analytics", kinds={"scikitlearn"})
def satisfaction_model(
    context: dg.AssetExecutionContext, config: ModelFitConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """A classifier on the distinct labelled recordings (``data/labels/*.csv``), cross-validated by
    recording; versioned, and versioned too when too few labels leave the rule to predict."""
    path = storage.fitted_model_path(satisfaction.ASSET)
    ensure_warehouse(context, storage)
    fitted, reassigned = assign.fit_or_keep(
        path,
        satisfaction.load_fitted_satisfaction_model,
        lambda: _fit_satisfaction(storage),
        config.refit,
        storage.warehouse_path,
        "satisfaction_predictions",
        lambda f, day: assign.prediction_rows_for_day(f, storage.lake_dir, day)[0],
    )
    if reassigned is None:
        context.log.info(f"satisfaction model {fitted.model_version} exists: kept (models_job refits)")
        return dg.MaterializeResult(metadata=_model_metadata(fitted, path, False, {}))
    if fitted.model is None:
        context.log.warning(f"no satisfaction model: {fitted.reason}; predictions use the emotion-valence rule")
    if fitted.stats["n_label_conflicts"]:
        context.log.warning(f"{fitted.stats['n_label_conflicts']} recordings have conflicting labels: left out")
    metadata = _model_metadata(
        fitted, path, fitted.model is not None, _reassigned_metadata("satisfaction_predictions", reassigned)
    )
    if fitted.model is not None:
        metadata["n_labels"] = fitted.model.n_labels
        metadata["cv_accuracy"] = dg.MetadataValue.float(fitted.model.cv_accuracy)
        metadata["cv_macro_f1"] = dg.MetadataValue.float(fitted.model.cv_macro_f1)
    else:
        metadata["n_labels"] = fitted.stats["n_recordings"]
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[satisfaction_model, EMBEDDINGS, SCORES],
    group_name="analytics",
    kinds={"duckdb"},
    metadata=table_definition_metadata("satisfaction_predictions"),
)
def satisfaction_predictions(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Satisfaction per recording of the day: the model's prediction, or the rule's (``source`` says
    which); every row has the model_version it was assigned with."""
    day = claim_day(context, storage)
    notes = []
    ensure_warehouse(context, storage)

    def rows_for_day(f: FittedModel, d: str):
        rows, note = assign.prediction_rows_for_day(f, storage.lake_dir, d)
        notes.append(note)
        return rows

    fitted, rows = _assign_day(
        storage,
        satisfaction.ASSET,
        satisfaction.load_fitted_satisfaction_model,
        "satisfaction_predictions",
        day,
        rows_for_day,
    )
    if rows is None:
        raise dg.Failure(f"no emotion_embeddings or emotion_scores for {day}: materialize this day's emotions first")
    note = notes[0]
    if note:
        context.log.warning(f"{day}: {note}")
    sources = rows.column("source").to_pylist()
    return dg.MaterializeResult(
        metadata={
            "row_count": rows.num_rows,
            "source": dg.MetadataValue.text(sources[0] if sources else "none"),
            "labels": dg.MetadataValue.json(dict(Counter(rows.column("label").to_pylist()))),
            "model_version": fitted.model_version,
        }
    )
