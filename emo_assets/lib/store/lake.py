"""The lake: one Parquet file per table and day, in hive layout.

``<lake>/<table>/date=YYYY-MM-DD/part-0.parquet``. A day is replaced as a whole: the new file is
written under a hidden temporary name in the same folder and renamed over the old one, so a
reader sees either the old day or the new day, never half a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emo_assets.lib import schemas
from emo_assets.lib.files.atomic import atomic_path, remove_stale_temps

PART_NAME = "part-0.parquet"


def partition_dir(lake_root: Path, table: str, day: str) -> Path:
    return Path(lake_root) / table / f"date={day}"


def partition_file(lake_root: Path, table: str, day: str) -> Path:
    return partition_dir(lake_root, table, day) / PART_NAME


def table_glob(lake_root: Path, table: str) -> str:
    """The glob DuckDB reads a lake table with (temporary files start with '.' and never match)."""
    return str(Path(lake_root) / table / "date=*" / "*.parquet")


def write_partition(lake_root: Path, table: str, day: str, rows: pa.Table) -> Path:
    """Replace one day of a lake table with ``rows`` atomically; returns the file written."""
    target = partition_file(lake_root, table, day)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Temporary files of a killed earlier run of the day; one run per day at a time (day_lock).
    remove_stale_temps(target.parent, PART_NAME)
    with atomic_path(target) as tmp:
        pq.write_table(rows, tmp, compression="zstd")
    return target


def write_partition_batches(
    lake_root: Path, table: str, day: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema
) -> tuple[Path, int]:
    """:func:`write_partition` for rows that come batch by batch: each batch is written as it comes,
    so the day's rows never sit in memory together. Returns the file written and its row count."""
    target = partition_file(lake_root, table, day)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent, PART_NAME)
    rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return target, rows


def read_partition(lake_root: Path, table: str, day: str) -> pa.Table | None:
    """One day of a lake table, or None if that day was never written."""
    path = partition_file(lake_root, table, day)
    if not path.exists():
        return None
    return pq.read_table(path)


def read_table(lake_root: Path, table: str, schema: pa.Schema | None = None) -> pa.Table | None:
    """Every day of a lake table, sorted by day; None if the table has no day yet."""
    files = sorted((Path(lake_root) / table).glob(f"date=*/{PART_NAME}"))
    if not files:
        return None
    tables = [pq.read_table(f, schema=schema) if schema is not None else pq.read_table(f) for f in files]
    return pa.concat_tables(tables, promote_options="default")


def partition_days(lake_root: Path, table: str) -> list[str]:
    return sorted(p.parent.name.removeprefix("date=") for p in (Path(lake_root) / table).glob(f"date=*/{PART_NAME}"))


def embedding_matrix(embeddings: pa.Table) -> np.ndarray:
    """The ``embedding`` column (fixed-size list<float32>[D]) as a float32 [N, D] array."""
    column = embeddings.column("embedding").combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


def voice_rows(rows: pa.Table | None) -> pa.Table | None:
    """The rows that stand for a whole recording where one row per recording is wanted (clusters,
    satisfaction, similarity): its ``customer`` channel in a two-channel call, else its ``mono`` one
    (NULL: written before channels existed). An agent's channel, or a side left unnamed, is in the
    emotion tables only."""
    if rows is None or "channel" not in rows.column_names:
        return rows
    channel = rows.column("channel")
    keep = pc.or_(pc.is_null(channel), pc.is_in(channel, pa.array([schemas.MONO, schemas.CUSTOMER])))
    return rows.filter(pc.fill_null(keep, True))


def newest_model_rows(embeddings: pa.Table) -> pa.Table:
    """Rows of the model that wrote the newest day: the model the analytics are fitted for."""
    newest = embeddings.sort_by([("date", "descending")]).column("model_id")[0].as_py()
    return embeddings.filter(pc.equal(embeddings.column("model_id"), newest))


# Each stage's quarantine rows of a day, gathered into the ``quarantine`` table by its asset.
REJECTS = "_rejects"


def write_rejects(lake_root: Path, stage: str, day: str, rows: pa.Table) -> Path:
    return write_partition(lake_root, f"{REJECTS}/{stage}", day, rows)


def read_rejects(lake_root: Path, stage: str, day: str) -> pa.Table | None:
    return read_partition(lake_root, f"{REJECTS}/{stage}", day)


def gather_rejects(lake_root: Path, day: str) -> pa.Table:
    """The day's ``quarantine`` rows: every stage's rejects, sorted by source_path and stage."""
    parts = [read_rejects(lake_root, stage, day) for stage in schemas.Stage]
    rows = pa.concat_tables([p for p in parts if p is not None] or [schemas.QUARANTINE.empty_table()])
    return rows.sort_by([("source_path", "ascending"), ("stage", "ascending")])
