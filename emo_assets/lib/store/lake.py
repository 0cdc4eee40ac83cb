"""The lake: one Parquet file per table and day, in hive layout.

``<lake>/<table>/date=YYYY-MM-DD/part-0.parquet``. A day is replaced as a whole: the new file is
written under a hidden temporary name in the same folder and renamed over the old one, so a
reader sees either the old day or the new day, never half a file.

Integrity: every partition is written with Parquet page checksums (a CRC32 per data page, verified
on every read) and its SHA-256 is recorded beside the tables, in
``<lake>/_checksums/<table>/date=YYYY-MM-DD/part-0.parquet.sha256`` (the table folders hold only
Parquet). The page checksums cover the data pages; the SHA-256 also covers the footer (schema,
offsets, statistics), where a flipped bit can change what is read without failing a page check. A
file that fails either, or cannot be parsed (truncated: no magic bytes), raises
:class:`CorruptPartitionError`; :func:`read_reusable` reports it as set aside, and the stage that
writes the table recomputes it from its source. The old SHA-256 is removed before the new file is
renamed into place and the new one recorded after: a writer killed in between leaves a whole file
without a recorded SHA-256 (read with its page checksums only), never a file with a wrong one.
A file the machine cannot read (permission, I/O error) is not corrupt: it raises
:class:`~emo_assets.lib.files.faults.MachineFault`.

The lake root is a local folder (a ``Path``) or an object-store URI (``s3://bucket/prefix``, the
setting ``EMO_LAKE_URI``): :func:`lake_filesystem` is the one place a root becomes a filesystem, and
every path is made by :func:`partition_file` and :func:`checksum_file` for both. In an object store
the layout, the checksum objects and the order of writes are the same; only publishing differs, the
way object stores allow: a partition is written to a local temporary file, then uploaded as one
object (one PUT, or a multipart upload completed in one call), so a reader sees the old object or
the new one, never half of one, and there is no temporary name to sweep. An object is read in one
GET: the bytes hashed are the bytes parsed. A store that does not answer raises
:class:`~emo_assets.lib.files.objectstore.ObjectStoreError` (a MachineFault), never a corrupt partition.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emo_assets.lib import schemas
from emo_assets.lib.files import objectstore
from emo_assets.lib.files.atomic import atomic_path, remove_stale_temps
from emo_assets.lib.files.faults import is_machine_fault, machine_fault

PART_NAME = "part-0.parquet"
CHECKSUMS = "_checksums"
CHECKSUM_SUFFIX = ".sha256"
# A Bloom filter on ``audio_id`` in every file of a table that has the column: a lookup of one
# recording (``WHERE audio_id = ?``, as `emo web` asks for a recording's newest day) reads each day's
# footer and filter, and the column itself only of the days the filter does not rule out (the day
# holding the recording, and about 1 in 20 others). Min/max statistics cannot do this: random
# SHA-256 ids span every file's range.
BLOOM_FILTERS = {"audio_id": True}
# Every partition: zstd pages, each with its CRC32, and the Bloom filters.
WRITE_OPTIONS = {"compression": "zstd", "write_page_checksum": True, "bloom_filter_options": BLOOM_FILTERS}
# A lake root, or a file in it: a local folder, or an object-store URI such as "s3://bucket/prefix".
LakeRoot = Path | str


class CorruptPartitionError(RuntimeError):
    """A lake file that fails its integrity check (SHA-256, page checksum) or cannot be parsed."""

    def __init__(self, path: LakeRoot, reason: str):
        self.path = path if objectstore.is_remote(path) else Path(path)
        self.reason = reason
        super().__init__(
            f"lake file {path} is corrupt ({reason}); re-run the day: the step that writes this table "
            "recomputes it from its source"
        )


@dataclass(frozen=True)
class Reused:
    """A stage's previous partition of a day: its rows (None when absent or corrupt) and, when it
    failed its integrity check and was set aside, why (``corrupt``)."""

    rows: pa.Table | None
    corrupt: str | None = None


def lake_filesystem(lake_root: LakeRoot):
    """The filesystem and root path of a lake: ``(None, Path)`` for a local folder, ``(fsspec
    filesystem, "bucket/prefix")`` for an object-store URI. The one place a lake root is interpreted."""
    if objectstore.is_remote(lake_root):
        objectstore.split_uri(lake_root)
        return objectstore.filesystem(lake_root), objectstore.fs_path(lake_root)
    return None, Path(lake_root)


def partition_dir(lake_root: LakeRoot, table: str, day: str) -> LakeRoot:
    return objectstore.join(lake_root, table, f"date={day}")


def partition_file(lake_root: LakeRoot, table: str, day: str) -> LakeRoot:
    return objectstore.join(partition_dir(lake_root, table, day), PART_NAME)


def checksum_file(lake_root: LakeRoot, partition: LakeRoot) -> LakeRoot:
    """Where the SHA-256 of the lake file ``partition`` is recorded."""
    relative = PurePosixPath(objectstore.relative(partition, lake_root))
    return objectstore.join(lake_root, CHECKSUMS, str(relative.parent), relative.name + CHECKSUM_SUFFIX)


def table_glob(lake_root: LakeRoot, table: str) -> str:
    """The glob DuckDB reads a lake table with (temporary files start with '.' and never match)."""
    return str(objectstore.join(lake_root, table, "date=*", "*.parquet"))


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


def file_sha256(path: LakeRoot) -> str:
    with objectstore.open_input(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def recorded_sha256(lake_root: LakeRoot, partition: LakeRoot) -> str | None:
    """The SHA-256 recorded when ``partition`` was written; None for a file written before
    checksums were recorded, or by a writer killed between the rename and the record."""
    try:
        with objectstore.open_input(checksum_file(lake_root, partition)) as f:
            return f.read().decode().strip()
    except FileNotFoundError:
        return None


def verify_partition(lake_root: LakeRoot, partition: LakeRoot, actual: str | None = None) -> None:
    """Raise :class:`CorruptPartitionError` when ``partition`` differs from its recorded SHA-256
    (``actual``: its SHA-256 when the caller has its bytes already)."""
    expected = recorded_sha256(lake_root, partition)
    if expected is None:
        return
    actual = actual or file_sha256(partition)
    if actual != expected:
        raise CorruptPartitionError(partition, f"SHA-256 {actual[:12]}... differs from the recorded {expected[:12]}...")


def _parquet(source, schema: pa.Schema | None = None) -> pa.Table:
    return pq.read_table(source, schema=schema, page_checksum_verification=True)


def read_partition_file(lake_root: LakeRoot, path: LakeRoot, schema: pa.Schema | None = None) -> pa.Table:
    """One lake file, verified: its SHA-256 against the recorded one, then every page's CRC32."""
    try:
        if objectstore.is_remote(path):  # one GET: the bytes hashed are the bytes parsed
            data = objectstore.cat(path)
            verify_partition(lake_root, path, hashlib.sha256(data).hexdigest())
            return _parquet(pa.BufferReader(data), schema)
        verify_partition(lake_root, path)
        return _parquet(path, schema)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the machine's or the file system's, not the bytes'
            if is_machine_fault(exc):
                raise machine_fault(exc, "reading the lake", path) from exc
            raise
        # truncated (no magic bytes), a page whose CRC32 differs, a footer that does not parse
        raise CorruptPartitionError(path, f"{type(exc).__name__}: {exc}") from exc


def read_schema(lake_root: LakeRoot, table: str, day: str) -> pa.Schema:
    """The Arrow schema stored in one day's Parquet file of a lake table."""
    with objectstore.open_input(partition_file(lake_root, table, day)) as f:
        return pq.read_schema(f)


@contextmanager
def _replacing(lake_root: LakeRoot, target: LakeRoot) -> Iterator[Path]:
    """:func:`atomic_path` for a partition, recording its SHA-256: the old record is removed just
    before the new file is renamed into place (uploaded, in an object store), the new one written
    just after. A full disk, a read-only or forbidden folder raises :class:`MachineFault`; the old
    day and its record stay."""
    record = checksum_file(lake_root, target)
    try:
        if objectstore.is_remote(target):
            with tempfile.TemporaryDirectory(prefix="emo-lake-") as folder:
                tmp = Path(folder) / PART_NAME
                yield tmp
                digest = file_sha256(tmp)
                objectstore.remove(record, missing_ok=True)
                objectstore.put_file(tmp, target)
            objectstore.put_bytes(f"{digest}\n".encode(), record)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        record.parent.mkdir(parents=True, exist_ok=True)
        # Temporary files of a killed earlier run of the day; one run per day at a time (day_lock).
        remove_stale_temps(target.parent, PART_NAME)
        remove_stale_temps(record.parent, record.name)
        with atomic_path(target) as tmp:
            yield tmp
            digest = file_sha256(tmp)
            record.unlink(missing_ok=True)
        with atomic_path(record) as tmp_record:
            tmp_record.write_text(digest + "\n")
    except OSError as exc:
        if is_machine_fault(exc):
            raise machine_fault(exc, "writing the lake", target) from exc
        raise


def write_partition(lake_root: LakeRoot, table: str, day: str, rows: pa.Table) -> LakeRoot:
    """Replace one day of a lake table with ``rows`` atomically; returns the file written."""
    target = partition_file(lake_root, table, day)
    with _replacing(lake_root, target) as tmp:
        pq.write_table(rows, tmp, **WRITE_OPTIONS)
    return target


def write_partition_batches(
    lake_root: LakeRoot, table: str, day: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema
) -> tuple[LakeRoot, int]:
    """:func:`write_partition` for rows that come batch by batch: each batch is written as it comes,
    so the day's rows never sit in memory together. Returns the file written and its row count."""
    target = partition_file(lake_root, table, day)
    rows = 0
    with _replacing(lake_root, target) as tmp:
        with pq.ParquetWriter(tmp, schema, **WRITE_OPTIONS) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
    return target, rows


def read_partition(lake_root: LakeRoot, table: str, day: str) -> pa.Table | None:
    """One day of a lake table, or None if that day was never written; raises
    :class:`CorruptPartitionError` when the file fails its integrity check."""
    path = partition_file(lake_root, table, day)
    if not objectstore.exists(path):
        return None
    return read_partition_file(lake_root, path)


def read_reusable(lake_root: LakeRoot, table: str, day: str) -> Reused:
    """A stage's own previous partition of the day, to reuse rows from: one that fails its
    integrity check is set aside (the stage recomputes it from its source), saying why."""
    try:
        return Reused(read_partition(lake_root, table, day))
    except CorruptPartitionError as exc:
        return Reused(None, str(exc))


def _partition_files(lake_root: LakeRoot, table: str) -> list[LakeRoot]:
    """Every day's file of a lake table, sorted by day."""
    if objectstore.is_remote(lake_root):
        return objectstore.glob(objectstore.join(lake_root, table, "date=*", PART_NAME))
    return sorted((Path(lake_root) / table).glob(f"date=*/{PART_NAME}"))


def read_table(lake_root: LakeRoot, table: str, schema: pa.Schema | None = None) -> pa.Table | None:
    """Every day of a lake table, sorted by day; None if the table has no day yet."""
    files = _partition_files(lake_root, table)
    if not files:
        return None
    tables = [read_partition_file(lake_root, f, schema) for f in files]
    return pa.concat_tables(tables, promote_options="default")


def partition_days(lake_root: LakeRoot, table: str) -> list[str]:
    return [PurePosixPath(str(f)).parent.name.removeprefix("date=") for f in _partition_files(lake_root, table)]


def partition_files(lake_root: LakeRoot, table: str) -> dict[str, LakeRoot]:
    """day -> the file holding that day of ``table``, for every day written (sorted by day)."""
    return {day: partition_file(lake_root, table, day) for day in partition_days(lake_root, table)}


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


def write_rejects(lake_root: LakeRoot, stage: str, day: str, rows: pa.Table) -> LakeRoot:
    return write_partition(lake_root, f"{REJECTS}/{stage}", day, rows)


def read_rejects(lake_root: LakeRoot, stage: str, day: str) -> pa.Table | None:
    return read_partition(lake_root, f"{REJECTS}/{stage}", day)


def gather_rejects(lake_root: LakeRoot, day: str) -> pa.Table:
    """The day's ``quarantine`` rows: every stage's rejects, sorted by source_path and stage."""
    parts = [read_rejects(lake_root, stage, day) for stage in schemas.Stage]
    rows = pa.concat_tables([p for p in parts if p is not None] or [schemas.QUARANTINE.empty_table()])
    return rows.sort_by([("source_path", "ascending"), ("stage", "ascending")])
