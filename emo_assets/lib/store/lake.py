"""The lake: one Parquet file per table and day, in hive layout.

``<lake>/<table>/date=YYYY-MM-DD/part-0.parquet``. A day is replaced as a whole: the new file is
written under a hidden temporary name in the same folder and renamed over the old one, so a
reader sees either the old day or the new day, never half a file.

The lake root is a local folder (a ``Path``) or an object-store URI (``s3://bucket/prefix``, the
setting ``EMO_LAKE_URI``). :func:`lake_filesystem` is the one place a root becomes a filesystem; the
functions below keep their names for both. On an object store a day is published the way object
stores allow: the Parquet file is written locally, then uploaded as one object (one PUT, or a
multipart upload completed in one call), so a reader sees the old object or the new one, never half
of one; there is no temporary name to sweep.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emo_assets.lib import schemas
from emo_assets.lib.files import objectstore
from emo_assets.lib.files.atomic import atomic_path, remove_stale_temps

PART_NAME = "part-0.parquet"
# A lake root: a local folder, or an object-store URI such as "s3://bucket/prefix".
LakeRoot = Path | str


def lake_filesystem(lake_root: LakeRoot):
    """The filesystem and root path of a lake: ``(None, Path)`` for a local folder, ``(fsspec
    filesystem, "bucket/prefix")`` for an object-store URI. The one place a lake root is interpreted."""
    if objectstore.is_remote(lake_root):
        objectstore.split_uri(lake_root)
        return objectstore.filesystem(lake_root), objectstore.fs_path(lake_root)
    return None, Path(lake_root)


def _is_remote(lake_root: LakeRoot) -> bool:
    return objectstore.is_remote(lake_root)


def partition_dir(lake_root: LakeRoot, table: str, day: str) -> Path | str:
    if _is_remote(lake_root):
        return objectstore.join(lake_root, table, f"date={day}")
    return Path(lake_root) / table / f"date={day}"


def partition_file(lake_root: LakeRoot, table: str, day: str) -> Path | str:
    if _is_remote(lake_root):
        return objectstore.join(partition_dir(lake_root, table, day), PART_NAME)
    return partition_dir(lake_root, table, day) / PART_NAME


def table_glob(lake_root: LakeRoot, table: str) -> str:
    """The glob DuckDB reads a lake table with (temporary files start with '.' and never match)."""
    if _is_remote(lake_root):
        return objectstore.join(lake_root, table, "date=*", "*.parquet")
    return str(Path(lake_root) / table / "date=*" / "*.parquet")


def attach_duckdb(con, lake_root: LakeRoot) -> None:
    """Let DuckDB connection ``con`` read the lake: an object-store lake's filesystem is registered
    with it (``con.register_filesystem``; DuckDB's httpfs extension is never used). Nothing to do for
    a local lake."""
    fs, _ = lake_filesystem(lake_root)
    if fs is None:
        return
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if not protocols & set(con.list_filesystems()):
        con.register_filesystem(fs)


def read_schema(lake_root: LakeRoot, table: str, day: str) -> pa.Schema:
    """The Arrow schema stored in one day's Parquet file of a lake table."""
    path = partition_file(lake_root, table, day)
    if _is_remote(lake_root):
        with objectstore.open_input(path) as f:
            return pq.read_schema(f)
    return pq.read_schema(path)


def _publish_remote(target: str, write) -> None:
    """Write a partition locally with ``write(local_path)``, then upload it as one object."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="emo-lake-") as tmp:
        local = Path(tmp) / PART_NAME
        write(local)
        objectstore.put_file(local, target)


def write_partition(lake_root: LakeRoot, table: str, day: str, rows: pa.Table) -> Path | str:
    """Replace one day of a lake table with ``rows`` atomically; returns the file written."""
    target = partition_file(lake_root, table, day)
    if _is_remote(lake_root):
        _publish_remote(target, lambda local: pq.write_table(rows, local, compression="zstd"))
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Temporary files of a killed earlier run of the day; one run per day at a time (day_lock).
    remove_stale_temps(target.parent, PART_NAME)
    with atomic_path(target) as tmp:
        pq.write_table(rows, tmp, compression="zstd")
    return target


def write_partition_batches(
    lake_root: LakeRoot, table: str, day: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema
) -> tuple[Path | str, int]:
    """:func:`write_partition` for rows that come batch by batch: each batch is written as it comes,
    so the day's rows never sit in memory together. Returns the file written and its row count."""
    target = partition_file(lake_root, table, day)
    if _is_remote(lake_root):
        counted = []

        def write(local: Path) -> None:
            counted.append(_write_batches(local, batches, schema))

        _publish_remote(target, write)
        return target, counted[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent, PART_NAME)
    with atomic_path(target) as tmp:
        rows = _write_batches(tmp, batches, schema)
    return target, rows


def _write_batches(path: Path, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> int:
    rows = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def read_partition(lake_root: LakeRoot, table: str, day: str) -> pa.Table | None:
    """One day of a lake table, or None if that day was never written."""
    path = partition_file(lake_root, table, day)
    if _is_remote(lake_root):
        return _read_remote(path)
    if not path.exists():
        return None
    return pq.read_table(path)


def _read_remote(uri: str, schema: pa.Schema | None = None) -> pa.Table | None:
    try:
        with objectstore.open_input(uri) as f:
            return pq.read_table(f, schema=schema)
    except FileNotFoundError:
        return None


def read_table(lake_root: LakeRoot, table: str, schema: pa.Schema | None = None) -> pa.Table | None:
    """Every day of a lake table, sorted by day; None if the table has no day yet."""
    if _is_remote(lake_root):
        files = objectstore.glob(objectstore.join(lake_root, table, "date=*", PART_NAME))
        tables = [t for t in (_read_remote(f, schema) for f in files) if t is not None]
        return pa.concat_tables(tables, promote_options="default") if tables else None
    files = sorted((Path(lake_root) / table).glob(f"date=*/{PART_NAME}"))
    if not files:
        return None
    tables = [pq.read_table(f, schema=schema) if schema is not None else pq.read_table(f) for f in files]
    return pa.concat_tables(tables, promote_options="default")


def partition_days(lake_root: LakeRoot, table: str) -> list[str]:
    if _is_remote(lake_root):
        files = objectstore.glob(objectstore.join(lake_root, table, "date=*", PART_NAME))
        return sorted(f.rsplit("/", 2)[-2].removeprefix("date=") for f in files)
    return sorted(p.parent.name.removeprefix("date=") for p in (Path(lake_root) / table).glob(f"date=*/{PART_NAME}"))


def embedding_matrix(embeddings: pa.Table) -> np.ndarray:
    """The ``embedding`` column (fixed-size list<float32>[D]) as a float32 [N, D] array."""
    column = embeddings.column("embedding").combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


def newest_model_rows(embeddings: pa.Table) -> pa.Table:
    """Rows of the model that wrote the newest day: the model the analytics are fitted for."""
    newest = embeddings.sort_by([("date", "descending")]).column("model_id")[0].as_py()
    return embeddings.filter(pc.equal(embeddings.column("model_id"), newest))


# Each stage's quarantine rows of a day, gathered into the ``quarantine`` table by its asset.
REJECTS = "_rejects"


def write_rejects(lake_root: LakeRoot, stage: str, day: str, rows: pa.Table) -> Path:
    return write_partition(lake_root, f"{REJECTS}/{stage}", day, rows)


def read_rejects(lake_root: LakeRoot, stage: str, day: str) -> pa.Table | None:
    return read_partition(lake_root, f"{REJECTS}/{stage}", day)


def gather_rejects(lake_root: LakeRoot, day: str) -> pa.Table:
    """The day's ``quarantine`` rows: every stage's rejects, sorted by source_path and stage."""
    parts = [read_rejects(lake_root, stage, day) for stage in schemas.Stage]
    rows = pa.concat_tables([p for p in parts if p is not None] or [schemas.QUARANTINE.empty_table()])
    return rows.sort_by([("source_path", "ascending"), ("stage", "ascending")])
