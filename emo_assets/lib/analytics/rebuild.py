"""The warehouse is derived state: rebuilt from the lake when it is missing or corrupt, and published
to the analysts once per run.

:func:`rebuild_warehouse` builds a new ``warehouse.duckdb`` beside the old one, for EVERY day of the
lake: ``embedding_index`` from every day's ``emotion_embeddings``, ``emotion_clusters`` and
``satisfaction_predictions`` re-assigned with the fitted model versions that exist (nothing is
fitted here), the lake views, the similarity macros and the SQL models. It replaces the old file
only when whole, then removes the corrupt marker. :func:`ensure_warehouse` does so before a run's
first write when the file is missing (while the lake has days), marked corrupt, or will not open.

:func:`publish_warehouse` is the one way a run's end publishes (`emo run`, the run-status sensors
of launched runs, tests that materialize): lib/store/publish.py with the similarity macros.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.analytics import assign, clustering, satisfaction, similarity
from emo_assets.lib.files.atomic import remove_stale_temps
from emo_assets.lib.store import lake, publish, warehouse
from emo_assets.lib.store.paths import fitted_model_path
from emo_assets.lib.store.sql_models import SqlModel, SqlModelError, discover_sql_models, materialize_sql_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rebuilt:
    reason: str
    days: tuple[str, ...]
    rows: dict[str, int]
    # SQL models that could not be built (a table no model has been fitted for yet, a bad file):
    # name -> error. Their assets build them, or fail naming the file, in the next run.
    sql_models_skipped: dict[str, str]


def _lake_days(lake_dir: Path) -> list[str]:
    return sorted({day for table in schemas.LAKE_TABLES for day in lake.partition_days(lake_dir, table)})


def needs_rebuild(
    warehouse_path: Path, lake_dir: Path, full_check: bool = False, running_day: str | None = None
) -> str | None:
    """Why the warehouse must be rebuilt, or None: missing while the lake has days (other than
    ``running_day``, which the calling run writes itself: a first run builds no history), marked
    corrupt (a step found a damaged block), or it does not open; with ``full_check``, any block
    unreadable (:func:`warehouse.verify`, which reads the whole file). The caller holds the writer lock."""
    warehouse_path = Path(warehouse_path)
    marker = warehouse.corrupt_marker(warehouse_path)
    if marker.exists():
        return marker.read_text().strip().split(". The warehouse is derived", 1)[0]
    if not warehouse_path.exists():
        days = _lake_days(lake_dir)
        others = [d for d in days if d != running_day]
        return f"{warehouse_path} is missing while the lake holds {len(days)} day(s)" if others else None
    try:
        if full_check:
            warehouse.verify(warehouse_path)
        else:
            with warehouse.writer_connection(warehouse_path) as con:
                con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    except warehouse.WarehouseCorruptError as exc:
        return str(exc).split(". The warehouse is derived", 1)[0]
    return None


def _sql_models_in_order(sql_dir: Path) -> list[SqlModel]:
    models = discover_sql_models(sql_dir)
    names = {m.name for m in models}
    done: set[str] = set()
    ordered: list[SqlModel] = []
    while len(ordered) < len(models):
        ready = [
            m for m in models if m.name not in done and all(t in done or t not in names for t in m.upstream_tables)
        ]
        if not ready:
            raise RuntimeError(f"SQL models in {sql_dir} read each other in a cycle")
        for m in ready:
            ordered.append(m)
            done.add(m.name)
    return ordered


def _build(con: duckdb.DuckDBPyConnection, lake_dir: Path, models_dir: Path, sql_dir: Path | None):
    rows: dict[str, int] = {}
    skipped: dict[str, str] = {}
    days = lake.partition_days(lake_dir, "emotion_embeddings")
    for day in days:
        embeddings = lake.read_partition(lake_dir, "emotion_embeddings", day)
        warehouse.replace_index_day(con, day, embeddings)
        rows[warehouse.EMBEDDING_INDEX] = rows.get(warehouse.EMBEDDING_INDEX, 0) + embeddings.num_rows
    assigned = (
        (clustering.ASSET, clustering.load_fitted_cluster_model, "emotion_clusters", assign.cluster_rows_for_day),
        (
            satisfaction.ASSET,
            satisfaction.load_fitted_satisfaction_model,
            "satisfaction_predictions",
            lambda f, d, day: assign.prediction_rows_for_day(f, d, day)[0],
        ),
    )
    for asset, load, table, rows_for_day in assigned:
        path = fitted_model_path(models_dir, asset)
        if not path.exists():
            log.warning(f"no fitted model at {path}: {table} is left for the next run to assign")
            continue
        fitted = load(path)  # the existing version: a rebuild never refits
        built = [r for r in (rows_for_day(fitted, lake_dir, day) for day in days) if r is not None]
        if built:
            warehouse.replace_table(con, table, pa.concat_tables(built))
            rows[table] = sum(r.num_rows for r in built)
    warehouse.refresh_lake_views(con, lake_dir)
    similarity.create_similarity_macros(con)
    if sql_dir is not None:
        for model in _sql_models_in_order(sql_dir):
            try:
                rows[model.name] = materialize_sql_model(con, model)
            except SqlModelError as exc:
                log.warning(f"SQL model {model.name} not rebuilt: {exc}")
                skipped[model.name] = str(exc)
    warehouse.apply_comments(con)
    return rows, skipped


def rebuild_warehouse(
    warehouse_path: Path,
    lake_dir: Path,
    models_dir: Path,
    sql_dir: Path | None,
    force: bool = False,
    running_day: str | None = None,
) -> Rebuilt | None:
    """Rebuild the warehouse from the lake for every day if it is missing or corrupt (or ``force``,
    which also reads every block first to report damage). Returns what was rebuilt, or None when the
    warehouse is sound. Under the writer lock, the state checked once it is held: parallel runs rebuild once."""
    warehouse_path = Path(warehouse_path)
    warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with warehouse.writer_lock(warehouse_path):
        reason = needs_rebuild(warehouse_path, lake_dir, full_check=force, running_day=running_day)
        if reason is None and not force:
            return None
        reason = reason or "asked for"
        log.warning(f"rebuilding the warehouse from the lake: {reason}")
        staging = warehouse_path.with_name(f".{warehouse_path.name}.rebuild.tmp")
        remove_stale_temps(warehouse_path.parent, f"{warehouse_path.name}.rebuild")
        for leftover in (staging, staging.with_name(staging.name + ".wal")):
            leftover.unlink(missing_ok=True)
        try:
            con = duckdb.connect(str(staging))
            try:
                rows, skipped = _build(con, lake_dir, models_dir, sql_dir)
            finally:
                con.close()
            warehouse.verify(staging)
            with open(staging, "rb") as f:
                os.fsync(f.fileno())
            warehouse_path.with_name(warehouse_path.name + ".wal").unlink(missing_ok=True)  # the old file's
            os.replace(staging, warehouse_path)
        except BaseException:
            staging.unlink(missing_ok=True)
            warehouse.corrupt_marker(staging).unlink(missing_ok=True)
            raise
        warehouse.corrupt_marker(warehouse_path).unlink(missing_ok=True)
        return Rebuilt(reason, tuple(lake.partition_days(lake_dir, "emotion_embeddings")), rows, skipped)


def ensure_warehouse(
    warehouse_path: Path, lake_dir: Path, models_dir: Path, sql_dir: Path | None, running_day: str | None = None
) -> Rebuilt | None:
    """Before a run writes to the warehouse: rebuild it when missing or corrupt (see :func:`needs_rebuild`)."""
    return rebuild_warehouse(warehouse_path, lake_dir, models_dir, sql_dir, running_day=running_day)


def publish_warehouse(
    warehouse_path: Path,
    lake_dir: Path,
    models_dir: Path,
    sql_dir: Path | None,
    grace_s: float = publish.GRACE_S,
    in_flight: frozenset[str] | set[str] = frozenset(),
) -> publish.Published:
    """Publish the analysts' copy at the end of a run (successful or failed: what succeeded is
    published). A warehouse deleted meanwhile is rebuilt first; one marked corrupt is not published
    (:class:`warehouse.WarehouseCorruptError`, naming the file and the remedy). Days in ``in_flight``
    (other runs still writing them) are left as they were published."""
    if not Path(warehouse_path).exists():
        ensure_warehouse(warehouse_path, lake_dir, models_dir, sql_dir)
    return publish.publish(
        warehouse_path, lake_dir, extras=similarity.create_similarity_macros, grace_s=grace_s, in_flight=in_flight
    )
