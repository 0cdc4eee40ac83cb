"""Erasure and retention where the lake is a local folder or an object-store prefix (``EMO_LAKE_URI``).

The few operations :mod:`~emo_assets.lib.privacy.erase` and
:mod:`~emo_assets.lib.privacy.retention` need on a lake's files, for a ``Path`` and a URI alike:
list, read and replace Parquet, delete a file or a day's folder, scan every object. In an object
store a Parquet file is replaced the way the lake publishes one (a local temporary file uploaded as
one object: a reader sees the old object or the new one), and :func:`delete_old_versions` removes
what a versioned bucket would keep of it. No dagster here.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from emo_assets.lib.files import objectstore
from emo_assets.lib.files.atomic import atomic_path
from emo_assets.lib.store import lake, publish

# Prefixes of an object-store lake that hold no lake table: the published copies (republished and
# purged apart), the 16 kHz FLACs and the day locks.
NOT_TABLES = (publish.PUBLISHED_PREFIX, "_resampled", "_locks")


def glob(folder: Path | str, *patterns: str) -> list[Path | str]:
    """Files under ``folder`` (a local folder or a URI) matching any of ``patterns``, sorted."""
    if objectstore.is_remote(folder):
        return sorted({uri for pattern in patterns for uri in objectstore.glob(f"{folder.rstrip('/')}/{pattern}")})
    return sorted({path for pattern in patterns for path in Path(folder).glob(pattern)})


def remove(path: Path | str) -> None:
    """Delete a local file or an object."""
    if objectstore.is_remote(path):
        objectstore.remove(path)
    else:
        Path(path).unlink()


def remove_tree(folder: Path | str) -> None:
    """Delete a local folder, or every object under a URI prefix."""
    if objectstore.is_remote(folder):
        objectstore.remove_tree(folder)
    elif Path(folder).is_dir():
        shutil.rmtree(folder)
    elif Path(folder).exists():
        Path(folder).unlink()


def name_of(path: Path | str, root: Path, lake_dir: Path | str) -> str:
    """How the erasure log names a place: relative to the data directory, or ``lake:`` and the key
    under an object-store lake."""
    if objectstore.is_remote(path):
        return f"lake:{objectstore.relative(path, lake_dir)}"
    return str(Path(path).relative_to(root))


def lake_parquet(lake_dir: Path | str) -> list[Path | str]:
    """Every Parquet file of the lake's tables (day partitions, side tables), sorted; for an
    object-store lake, not the published copies, FLACs or locks."""
    if not objectstore.is_remote(lake_dir):
        return [p for p in sorted(Path(lake_dir).rglob("*.parquet")) if not p.name.startswith(".")]
    found = []
    for uri in objectstore.find(lake_dir):
        parts = PurePosixPath(objectstore.relative(uri, lake_dir)).parts
        if parts[0] not in NOT_TABLES and uri.endswith(".parquet") and not parts[-1].startswith("."):
            found.append(uri)
    return found


def read_schema(path: Path | str) -> pa.Schema:
    with objectstore.open_input(path) as f:
        return pq.read_schema(f)


def read_parquet(path: Path | str, columns: list[str] | None = None) -> pa.Table:
    with objectstore.open_input(path) as f:
        return pq.read_table(f, columns=columns)


def replace_parquet(path: Path | str, rows: pa.Table) -> None:
    """Replace a Parquet file (not a lake partition: lake.write_partition records its SHA-256) with
    ``rows``: a temporary file renamed over it, or uploaded as one object. It keeps the lake's Bloom
    filters (:data:`lake.BLOOM_FILTERS`): a published file is read by the same lookups."""
    if not objectstore.is_remote(path):
        with atomic_path(Path(path)) as tmp:
            pq.write_table(rows, tmp, compression="zstd", bloom_filter_options=lake.BLOOM_FILTERS)
        return
    with tempfile.TemporaryDirectory(prefix="emo-erase-") as folder:
        tmp = Path(folder) / "part.parquet"
        pq.write_table(rows, tmp, compression="zstd", bloom_filter_options=lake.BLOOM_FILTERS)
        objectstore.put_file(tmp, path)


def days_of(folder: Path | str) -> dict[str, Path | str]:
    """``name`` -> place, for the entries directly under a local folder or a URI prefix."""
    if not objectstore.is_remote(folder):
        return {child.name: child for child in sorted(Path(folder).iterdir())} if Path(folder).is_dir() else {}
    prefix = folder.rstrip("/")
    names = {PurePosixPath(objectstore.relative(uri, prefix)).parts[0] for uri in objectstore.find(prefix)}
    return {name: f"{prefix}/{name}" for name in sorted(names)}


def day_folders(lake_dir: Path | str) -> list[tuple[str, Path | str]]:
    """``(day, folder)`` for every ``date=DAY`` folder of the lake's tables (``_rejects/<stage>`` and
    ``_checksums/<table>`` included; for an object-store lake, not :data:`NOT_TABLES`)."""
    if not objectstore.is_remote(lake_dir):
        folders = sorted({p for p in Path(lake_dir).rglob("date=*") if p.is_dir()})
        return [(p.name.removeprefix("date="), p) for p in folders]
    found = set()
    for uri in objectstore.find(lake_dir):
        parts = PurePosixPath(objectstore.relative(uri, lake_dir)).parts
        if parts[0] in NOT_TABLES:
            continue
        for i, part in enumerate(parts[:-1]):
            if part.startswith("date="):
                found.add((part.removeprefix("date="), objectstore.join(lake_dir, *parts[: i + 1])))
                break
    return sorted(found)


def delete_old_versions(lake_dir: Path | str, wanted: Callable[[str], bool]) -> int:
    """In a versioned bucket, every non-current version and delete marker under the lake's prefix
    whose URI ``wanted``; 0 for an unversioned bucket or a local lake."""
    if not objectstore.is_remote(lake_dir) or not objectstore.is_versioned(lake_dir):
        return 0
    return objectstore.delete_old_versions(lake_dir, wanted)


def objects_holding(lake_dir: str, holds: Callable[[str], bool], needles: list[str]) -> list[str]:
    """Every object under the lake's prefix whose key names one of ``needles`` or that ``holds``
    one; in a versioned bucket, also every old version or delete marker whose key names one."""
    found = [uri for uri in objectstore.find(lake_dir) if any(n in uri for n in needles) or holds(uri)]
    if objectstore.is_versioned(lake_dir):
        old = {uri for uri, _, _ in objectstore.old_versions(lake_dir) if any(n in uri for n in needles)}
        found += [f"{uri} (an old version)" for uri in sorted(old)]
    return found
