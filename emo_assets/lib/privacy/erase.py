"""Erase recordings everywhere the platform put them (`emo erase AUDIO_ID... | --path SOURCE`).

In this order, so that an interrupted erasure can simply be run again:

1. a tombstone (lib/files/tombstones.py): from now on ingest deletes these bytes on sight; then,
   when the caller gives it, Dagster's run history (lib/privacy/run_history.py), while the
   recordings' source paths are still in the lake;
2. the raw files (those whose bytes hash to the id) and the 16 kHz FLAC copies;
3. web outputs holding the recording (its processed audio, or its id);
4. every Parquet file under the data directory (but ``published/``) with a row naming it (any text
   column equal to the id): the lake's day partitions (through lake.py's writer, so each day's
   SHA-256 record is rewritten with it and the next run does not take the day for corrupt),
   quarantine and side tables, exports. Each is rewritten whole through a temporary file and a rename;
5. every warehouse table (then the DuckDB file is rewritten, so no free block keeps the rows);
6. every day of the similarity index that held it (rebuilt from the rewritten lake day);
7. npy/CSV exports (re-exported from the rewritten lake) and reports naming it (deleted);
8. fitted models fitted after it landed: marked stale, so the next run refits without it;
9. the analysts' copy published again (lib/store/publish.py: the catalog then lists only the
   rewritten lake days and re-exported warehouse days), then every file under ``published/`` still
   holding it deleted at once, not after the grace period (a superseded file, or the hard link
   that is the last name of a rewritten lake file's old bytes), or rewritten in place when the
   catalog still lists it (a day another run is writing);
10. the erasure log: when, the keyed hashes, counts of what was removed where;
11. a scan of every file under the data directory (but the erasure folder) for the ids, as text
    and as numpy's UTF-32 (lib/privacy/scan.py): any file still holding one is returned in ``leftovers``.

With the lake in an object store (``EMO_LAKE_URI``) the same steps reach the bucket: the FLACs
under ``<lake>/_resampled/`` are deleted, every lake object holding a row is rewritten through
lake.py's writer (a local temporary file uploaded as one object, its SHA-256 object rewritten with
it), ``<lake>/_published/`` objects holding an id are deleted or rewritten by the republish, and the
final scan reads every object under the lake's prefix (keys and bytes). In a versioned bucket the
old versions still hold the bytes: every non-current version and delete marker under the erased
days' ``date=DAY`` prefixes (and any key naming an id) is deleted (lib/privacy/bucket.py).

No dagster here; the caller (the CLI) reports and sets the exit code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emo_assets.lib.analytics import ann, fitted, nearest, rebuild
from emo_assets.lib.audio.raw_scan import sha256_file
from emo_assets.lib.files import objectstore, tombstones
from emo_assets.lib.privacy import bucket
from emo_assets.lib.privacy.scan import files_holding, holds
from emo_assets.lib.results import export
from emo_assets.lib.store import day_lock, lake, publish, warehouse
from emo_assets.lib.store.paths import FITTED_MODEL_SUFFIX

AUDIO_ID_HEX = 64


class ErasureError(ValueError):
    """An erasure request that cannot be carried out as asked (unknown source path, bad id)."""


@dataclass
class Erasure:
    """What one erasure removed, as counts (written to the erasure log) and the files still holding an id."""

    removed: dict = field(default_factory=dict)
    leftovers: list[Path] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        if n:
            self.removed[what] = self.removed.get(what, 0) + n


def check_audio_ids(audio_ids: list[str]) -> list[str]:
    bad = [a for a in audio_ids if len(a) != AUDIO_ID_HEX or any(c not in "0123456789abcdef" for c in a)]
    if bad:
        raise ErasureError(
            f"{len(bad)} argument(s) are not audio_ids (64 lowercase hex digits, the SHA-256 of the file); "
            "to erase by file, use --path SOURCE"
        )
    return sorted(set(audio_ids))


def ids_of_sources(storage, sources: list[str]) -> list[str]:
    """The audio_ids of ``sources``: paths as ``audio_files.source_path`` holds them (``DAY/name``)
    or files (then their bytes are hashed)."""
    files = lake.read_table(storage.lake_dir, "audio_files")
    by_source: dict[str, set[str]] = {}
    if files is not None:
        for a, s in zip(files.column("audio_id").to_pylist(), files.column("source_path").to_pylist()):
            by_source.setdefault(s, set()).add(a)
    ids: set[str] = set()
    for source in sources:
        path = Path(source)
        if path.is_file():
            ids.add(sha256_file(path))
            path = path.resolve()
            if path.is_relative_to(storage.raw_dir):
                source = str(path.relative_to(storage.raw_dir))
        if source in by_source:
            ids |= by_source[source]
        elif not path.is_file():
            raise ErasureError(f"no recording at {source}: not a file, and no audio_files row has that source_path")
    return sorted(ids)


def erase(
    storage,
    audio_ids: list[str],
    now: dt.datetime | None = None,
    is_active: Callable[[str], bool] = lambda run: False,
    history: Callable[[list[str], list[str]], dict[str, int]] | None = None,
) -> Erasure:
    """Erase ``audio_ids`` from the data directory of ``storage`` (a StorageResource). ``is_active``:
    whether a Dagster run holding a day's lease is still running (its day is left to its own publish,
    the published file of that day cleaned in place). ``history``: rewrites the ids and the source
    paths they landed under in Dagster's run history (lib/privacy/run_history.py: the caller owns
    the instance), returning counts; first, while the source paths are still known, so that a
    history that cannot be rewritten stops the erasure before any file is touched."""
    ids = check_audio_ids(audio_ids)
    now = now or dt.datetime.now(dt.UTC)
    root = storage.root
    done = Erasure()
    hashes = tombstones.add_tombstones(root, ids)
    facts = _facts(storage.lake_dir, ids)
    with contextlib.ExitStack() as held:  # no run of a day the recordings are in works meanwhile
        for day in facts.days:
            held.enter_context(day_lock.hold_day(storage.locks_dir, day, holder="emo erase"))
        for what, n in (history(ids, facts.sources) if history is not None else {}).items():
            done.count(what, n)
        _erase_held(storage, ids, facts, done, now)
    republish(storage, lambda path: holds(path, ids), lambda path: _rewrite_without(path, ids), done, is_active)
    if objectstore.is_remote(storage.lake_dir):
        days = [f"/date={day}/" for day in facts.days]
        done.count(
            "object_versions_deleted",
            bucket.delete_old_versions(
                storage.lake_dir, lambda uri: any(d in uri for d in days) or any(a in uri for a in ids)
            ),
        )
    tombstones.append_log(root, hashes, done.removed, now)
    done.leftovers = files_holding(root, ids, skip=tombstones.erasure_dir(root))
    if objectstore.is_remote(storage.lake_dir):
        done.leftovers += bucket.objects_holding(storage.lake_dir, lambda uri: holds(uri, ids), ids)
    return done


def _erase_held(storage, ids: list[str], facts: _Facts, done: Erasure, now: dt.datetime) -> None:
    root = storage.root
    for source in facts.sources:
        raw = storage.raw_dir / source
        if raw.is_file() and sha256_file(raw) in ids:
            raw.unlink()
            done.count("raw_files")
    processed = set()
    for audio_id in ids:
        # the mono FLAC, and each side of a two-channel call (<audio_id>.<channel>.flac)
        for flac in bucket.glob(storage.resampled_dir, f"*/{audio_id}.flac", f"*/{audio_id}.*.flac"):
            processed.add(_samples_digest(flac))
            bucket.remove(flac)
            done.count("flac_files")
    done.count("web_outputs", _erase_web_outputs(root / "web_outputs", ids, processed, facts.names))
    for path, n in _erase_parquet(root, storage.lake_dir, ids):
        done.count(f"rows:{bucket.name_of(path, root, storage.lake_dir)}", n)
    for table, n in warehouse.erase_values(storage.warehouse_path, ids).items():
        done.count(f"warehouse_rows:{table}", n)
    for model_id, _day in _erase_similarity(storage, ids):
        done.count(f"similarity_days:{model_id}")
    done.count("exports_rewritten", _erase_exports(root / "exports", storage.lake_dir, ids))
    done.count("report_files", _erase_reports(storage.reports_dir, ids))
    for asset in _mark_models_stale(storage.models_dir, facts.first_ingested, now):
        done.count(f"fitted_models_stale:{asset}")


@dataclass(frozen=True)
class _Facts:
    sources: list[str]  # source_path values (relative to raw/)
    names: set[str]  # their file names
    days: list[str]  # days of the lake holding a row of them
    first_ingested: dt.datetime | None


def _facts(lake_dir: Path, ids: list[str]) -> _Facts:
    """Where the recordings came from, from every lake table with a ``source_path`` column."""
    sources, days, first = set(), set(), None
    for path in bucket.lake_parquet(lake_dir):
        names = bucket.read_schema(path).names
        folder = PurePosixPath(str(path)).parent.name
        if "audio_id" in names and folder.startswith("date="):
            found = bucket.read_parquet(path, columns=["audio_id"]).column("audio_id")
            if pc.any(pc.is_in(found, pa.array(ids))).as_py():
                days.add(folder.removeprefix("date="))
        if "audio_id" not in names or "source_path" not in names:
            continue
        cols = ["audio_id", "source_path"] + (["ingested_at"] if "ingested_at" in names else [])
        rows = bucket.read_parquet(path, columns=cols)
        rows = rows.filter(pc.is_in(rows.column("audio_id"), pa.array(ids)))
        sources |= {s for s in rows.column("source_path").to_pylist() if s}
        if "ingested_at" in cols and rows.num_rows:
            earliest = pc.min(rows.column("ingested_at")).as_py()
            first = earliest if first is None or (earliest is not None and earliest < first) else first
    return _Facts(sorted(sources), {Path(s).name for s in sources}, sorted(days), first)


def _samples_digest(path: Path | str) -> str:
    """SHA-256 of a file's 16-bit samples: the lake FLAC and a web output's WAV of one recording match."""
    import soundfile as sf

    digest = hashlib.sha256()
    with objectstore.open_input(path) as raw, sf.SoundFile(raw) as f:
        for block in f.blocks(blocksize=1 << 16, dtype="int16"):
            digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()


def _erase_web_outputs(outputs: Path, ids: list[str], processed: set[str], names: set[str]) -> int:
    """Delete result folders holding one of the recordings: its 16 kHz samples, its id or its file name."""
    import json

    removed = 0
    for folder in sorted(outputs.glob("outputs_*")) if outputs.is_dir() else []:
        hit = any(holds(p, ids) for p in folder.rglob("*") if p.is_file())
        for wav in folder.rglob("processed_audio.wav"):
            hit = hit or _samples_digest(wav) in processed
        for result in folder.rglob("result.json"):
            hit = hit or json.loads(result.read_text()).get("audio_name") in names
        if hit:
            shutil.rmtree(folder)
            removed += 1
    return removed


def _without(path: Path | str, ids: list[str]) -> tuple[pa.Table, int] | None:
    """The rows of a Parquet file (or object) with no text column equal to an id, and how many were
    dropped; None when the file has no text column."""
    schema = bucket.read_schema(path)
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    if not text:
        return None
    wanted = pa.array(ids)
    rows = bucket.read_parquet(path)
    hit = pc.is_in(rows.column(text[0]), wanted)
    for name in text[1:]:
        hit = pc.or_(hit, pc.is_in(rows.column(name), wanted))
    hit = pc.fill_null(hit, False)
    return rows.filter(pc.invert(hit)), pc.sum(hit).as_py() or 0


def _rewrite_without(path: Path | str, ids: list[str]) -> int:
    """Rewrite a Parquet file or object (not the lake's) without the rows naming an id; returns rows dropped."""
    kept = _without(path, ids)
    if kept is None or not kept[1]:
        return 0
    bucket.replace_parquet(path, kept[0])
    return kept[1]


def _lake_partition(lake_dir: Path | str, path: Path | str) -> tuple[str, str] | None:
    """(table, day) when ``path`` is a day partition of the lake (``_rejects/<stage>`` included)."""
    try:
        parts = PurePosixPath(objectstore.relative(path, lake_dir)).parts
    except ValueError:  # not under the lake
        return None
    if parts[-1] != lake.PART_NAME:
        return None
    if len(parts) < 3 or not parts[-2].startswith("date=") or parts[0] == lake.CHECKSUMS:
        return None
    return "/".join(parts[:-2]), parts[-2].removeprefix("date=")


def _erase_parquet(root: Path, lake_dir: Path | str, ids: list[str]) -> list[tuple[Path | str, int]]:
    """Rewrite every Parquet file under ``root`` (but the erasure folder and ``published/``, see
    :func:`republish`), and every Parquet object of a lake in an object store (but ``_published/``),
    that has a row with a text column equal to an id. A lake day is rewritten through
    :func:`lake.write_partition`, which records its new SHA-256."""
    skip = {tombstones.ERASURE_DIR, warehouse.PUBLISHED_DIR}
    local = [p for p in sorted(root.rglob("*.parquet")) if not p.name.startswith(".")]
    local = [p for p in local if p.relative_to(root).parts[0] not in skip]
    remote = bucket.lake_parquet(lake_dir) if objectstore.is_remote(lake_dir) else []
    changed = []
    for path in [*local, *remote]:
        kept = _without(path, ids)
        if kept is None or not kept[1]:
            continue
        partition = _lake_partition(lake_dir, path)
        if partition is not None:
            lake.write_partition(lake_dir, *partition, kept[0])
        else:
            bucket.replace_parquet(path, kept[0])
        changed.append((path, kept[1]))
    return changed


def republish(
    storage,
    holds_erased: Callable[[Path | str], bool],
    clean: Callable[[Path | str], object],
    done: Erasure,
    is_active: Callable[[str], bool] = lambda run: False,
) -> None:
    """Publish the analysts' copy again once the lake and the warehouse no longer hold what was
    erased, then delete at once (or clean in place, when still listed) every published file that
    ``holds_erased``: the grace period keeps old versions for readers, never erased rows. Nothing
    to do when nothing was ever published. Used by erasure and retention."""
    if not (storage.root / warehouse.PUBLISHED_DIR).is_dir():
        return
    published = rebuild.publish_warehouse(
        storage.warehouse_path,
        storage.lake_dir,
        storage.models_dir,
        storage.sql_models_dir,
        in_flight=day_lock.days_in_flight(storage.locks_dir, is_active),
    )
    done.count("published_versions")
    done.count("published_files_written", len(published.written))
    deleted, rewritten = publish.purge(storage.warehouse_path, holds_erased, clean, lake_dir=storage.lake_dir)
    done.count("published_files_deleted", len(deleted))
    done.count("published_files_rewritten", len(rewritten))


def _erase_similarity(storage, ids: list[str]) -> list[tuple[str, str]]:
    """Rebuild every day of the similarity index that held an id, from the (rewritten) lake day."""
    root = storage.similarity_dir
    touched = []
    for model_id in ann.indexed_models(root):
        for day in ann.indexed_days(root, model_id):
            with np.load(ann.day_path(root, model_id, day), allow_pickle=False) as npz:
                held = set(npz["audio_id"].tolist())
            if held & set(ids):
                touched.append((model_id, day))
    for day in sorted({day for _, day in touched}):
        if lake.read_partition(storage.lake_dir, "emotion_embeddings", day) is None:
            for model_id in ann.indexed_models(root):
                ann.remove_day(root, model_id, day)
        else:
            nearest.index_day(storage.lake_dir, root, day)
    return touched


def _erase_exports(exports: Path, lake_dir: Path, ids: list[str]) -> int:
    """Re-export (from the rewritten lake) each export folder of ``emo export`` holding an id."""
    rewritten = 0
    for folder in sorted(p for p in exports.glob("*") if p.is_dir()) if exports.is_dir() else []:
        files = [p for p in folder.iterdir() if p.is_file()]
        if not any(holds(p, ids) for p in files):
            continue
        day = folder.name
        names = {p.name for p in files}
        formats = [
            fmt
            for fmt, marker in (
                ("npy", f"index_{day}.csv"),
                ("parquet", f"emotion_{day}.parquet"),
                ("csv", f"emotion_{day}.csv"),
            )
            if marker in names
        ]
        for fmt in formats:
            export.export_day(lake_dir, day, folder, fmt)
        for p in files:  # anything the re-export did not replace and still names it
            if p.exists() and holds(p, ids):
                p.unlink()
        rewritten += 1
    return rewritten


def _erase_reports(reports: Path, ids: list[str]) -> int:
    """Delete report files naming an id (regenerate them with `emo report --date DAY`)."""
    removed = 0
    for path in sorted(reports.rglob("*")) if reports.is_dir() else []:
        if path.is_file() and holds(path, ids):
            path.unlink()
            removed += 1
    return removed


def _mark_models_stale(models_dir: Path, first_ingested: dt.datetime | None, now: dt.datetime) -> list[str]:
    """Mark stale every fitted model fitted after the recording landed (it was fitted on it)."""
    marked = []
    for path in sorted(Path(models_dir).glob(f"*{FITTED_MODEL_SUFFIX}")):
        with path.open("rb") as f:
            model = pickle.load(f)  # our own file (lib/analytics/fitted.py)
        fitted_at = dt.datetime.fromisoformat(getattr(model, "fitted_at", now.isoformat()))
        # fitted_at is kept to the second: a fit in the same second as the landing counts as after it
        if first_ingested is None or fitted_at >= first_ingested.replace(microsecond=0):
            fitted.mark_stale(path, "fitted on a recording that has since been erased", now)
            marked.append(path.name.removesuffix(FITTED_MODEL_SUFFIX))
    return marked
