"""Warehouse tables assigned with a fitted model: one day at a time, or every day at once after a fit.

:func:`fit_or_keep` and :func:`assign_day` run under ``fitted.models_lock``, so a fit never lands
between reading a model and writing the rows it assigned, and parallel runs fit once: a table holds
one ``model_version``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from emo_assets.lib.analytics import clustering, satisfaction
from emo_assets.lib.analytics.fitted import FittedModel, is_stale, models_lock, save_fitted
from emo_assets.lib.store import lake, warehouse


@dataclass(frozen=True)
class Reassigned:
    """Days of a table re-assigned after a fit, and days dropped because their lake rows are gone."""

    days: tuple[str, ...]
    dropped_days: tuple[str, ...]
    row_count: int


def cluster_rows_for_day(fitted: FittedModel, lake_dir: Path, day: str) -> pa.Table | None:
    """``emotion_clusters`` rows of ``day``; None when the day has no embeddings in the lake."""
    embeddings = lake.voice_rows(lake.read_partition(lake_dir, "emotion_embeddings", day))
    return None if embeddings is None else clustering.cluster_rows(fitted, embeddings)


def prediction_rows_for_day(fitted: FittedModel, lake_dir: Path, day: str) -> tuple[pa.Table | None, str | None]:
    """``satisfaction_predictions`` rows of ``day`` and a note; None when the day's lake rows are gone."""
    # a two-channel call's satisfaction is the customer's: their channel's rows (lake.voice_rows)
    embeddings = lake.voice_rows(lake.read_partition(lake_dir, "emotion_embeddings", day))
    scores = lake.voice_rows(lake.read_partition(lake_dir, "emotion_scores", day))
    if embeddings is None or scores is None:
        return None, None
    return satisfaction.prediction_rows(fitted, embeddings, scores)


def _require_versioned(con, table: str) -> None:
    columns = warehouse.table_columns(con, table)
    if columns and "model_version" not in columns:
        raise RuntimeError(
            f"warehouse table {table} predates model versions (no model_version column); refit the models "
            "once to re-assign every day: emo run --date DAY --refit-models, or launch models_job"
        )


def write_day(warehouse_path: Path, table: str, day: str, rows: pa.Table) -> None:
    """Replace ``day`` of ``table`` with rows assigned by the current model version."""
    with warehouse.connect(warehouse_path) as con:
        _require_versioned(con, table)
        warehouse.replace_day(con, table, day, rows)


def reassign_every_day(warehouse_path: Path, table: str, rows_for_day: Callable[[str], pa.Table | None]) -> Reassigned:
    """Re-assign every day ``table`` holds in one transaction (``rows_for_day`` builds a day).

    A day whose lake rows are gone cannot be re-assigned; its old rows are dropped rather than kept
    under an old version, and the day is reported in ``dropped_days``.
    """
    with warehouse.connect(warehouse_path) as con:
        days = warehouse.table_days(con, table)
        if not days:
            return Reassigned((), (), 0)
        built = {day: rows_for_day(day) for day in days}
        kept = [rows for rows in built.values() if rows is not None]
        dropped = tuple(day for day, rows in built.items() if rows is None)
        if kept:
            warehouse.replace_table(con, table, pa.concat_tables(kept))
        else:
            warehouse.delete_all(con, table)
        return Reassigned(tuple(d for d in days if d not in dropped), dropped, sum(r.num_rows for r in kept))


def fit_or_keep(
    path: Path,
    load: Callable[[Path], FittedModel],
    fit: Callable[[], FittedModel],
    refit: bool,
    warehouse_path: Path,
    table: str,
    rows_for_day: Callable[[FittedModel, str], pa.Table | None],
) -> tuple[FittedModel, Reassigned | None]:
    """The fitted model at ``path``: kept if it exists (unless ``refit``), else fitted, every day of
    ``table`` re-assigned with it, then saved. Returns the model and the re-assignment (None: kept).

    Runs under the models lock (of ``path``'s folder): parallel callers fit once; the others get that
    version. The re-assignment commits before the file is replaced, so a failed one keeps the old
    model and the old rows.
    """
    with models_lock(path.parent):
        if path.exists() and not refit and not is_stale(path):  # stale: fitted on an erased recording
            return load(path), None
        fitted = fit()
        reassigned = reassign_every_day(warehouse_path, table, lambda day: rows_for_day(fitted, day))
        save_fitted(fitted, path)
        return fitted, reassigned


def assign_day(
    path: Path,
    load: Callable[[Path], FittedModel],
    warehouse_path: Path,
    table: str,
    day: str,
    rows_for_day: Callable[[FittedModel, str], pa.Table | None],
) -> tuple[FittedModel, pa.Table | None]:
    """Assign ``day`` of ``table`` with the fitted model at ``path`` under the models lock, so no fit
    lands between reading the model and writing its rows. Returns the model and the rows written
    (None: the day's lake rows are missing, nothing written)."""
    with models_lock(path.parent):
        fitted = load(path)
        rows = rows_for_day(fitted, day)
        if rows is not None:
            write_day(warehouse_path, table, day, rows)
        return fitted, rows
