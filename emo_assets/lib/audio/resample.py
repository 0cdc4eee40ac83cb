"""Stage 2: every readable recording of a day as 16 kHz mono FLAC, decoded in a worker pool: threads
of this process, or any executor's ``submit`` (CPU tasks on a Ray cluster: lib/ray_cluster.py), one
recording per task.

The FLACs go to a local folder, or to an object-store folder (``s3://bucket/prefix/_resampled/date=<day>``,
a URI): each FLAC is then written to a local temporary file and uploaded as one object, so a FLAC in the
store is always whole. A day's ``resampled_audio`` partition, written after its FLACs, is what readers
trust: a FLAC it does not name is never read.
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.audio import channels
from emo_assets.lib.audio.channels import ChannelConfigError, ChannelLayout
from emo_assets.lib.audio.load import SILENT_BELOW_DBFS, AudioDecodeError, stream_mono_16k, write_mono_16k_flac
from emo_assets.lib.files import objectstore
from emo_assets.lib.files.atomic import remove_stale_temps
from emo_assets.lib.files.faults import MachineFault, is_machine_fault, machine_fault
from emo_assets.lib.schemas import MONO, Stage, StageOutput, reject_rows


def _inside(location: Path | str, root: Path | str) -> bool:
    try:
        objectstore.relative(location, root)
    except ValueError:
        return False
    return True


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


def stored_path(flac_path: Path | str, data_root: Path | str | None) -> str:
    """``resampled_audio.path``: the FLAC relative to ``data_root``, the folder or URI holding the
    resampled audio (the data directory, or the lake's URI for FLACs in an object store), so a copied,
    moved or restored data directory points at its own files (:func:`resolve_paths` gives usable
    paths); absolute when there is no data directory (a caller outside the pipeline)."""
    if data_root is None:
        return str(flac_path)
    # not resolved: a resampled/ folder that is a symlink to another disk stays under the data directory
    return objectstore.relative(flac_path, data_root)


def locate(path: str, data_root: Path | str | None) -> Path | str:
    """Where the FLAC of a ``resampled_audio.path`` is: resolved against ``data_root`` (a local path or a
    URI); a path written absolute, before paths were stored relative, stays as it is."""
    if objectstore.is_remote(path):
        return path
    return Path(path) if data_root is None else objectstore.join(data_root, path)


def resolve_paths(resampled: pa.Table, data_root: Path | str) -> pa.Table:
    """``resampled_audio`` rows with ``path`` resolved against ``data_root`` (:func:`locate`)."""
    paths = [str(locate(p, data_root)) for p in resampled.column("path").to_pylist()]
    return resampled.set_column(resampled.schema.get_field_index("path"), "path", pa.array(paths, pa.string()))


def _write(flac_path: Path | str, blocks, data_root: Path | str | None) -> dict:
    """Write one 16 kHz mono FLAC from ``blocks``; an object-store ``flac_path`` is written to a local
    temporary file and uploaded whole."""
    if objectstore.is_remote(flac_path):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="emo-flac-") as tmp:
            local = Path(tmp) / flac_path.rsplit("/", 1)[-1]
            written = write_mono_16k_flac(local, blocks)
            objectstore.put_file(local, flac_path)
    else:
        written = write_mono_16k_flac(flac_path, blocks)
    return {
        "path": stored_path(flac_path, data_root),
        "duration_s": written.duration_s,
        "rms_dbfs": written.rms_dbfs,
        "is_silent": written.rms_dbfs < SILENT_BELOW_DBFS,
    }


def _resample_one(
    raw_path: Path, out_dir: Path | str, audio_id: str, layout: ChannelLayout | None, data_root: Path | str | None
) -> dict[str, dict]:
    """Decode, downmix (or split into the layout's sides), resample and write block by block: memory
    bounded for any length. Returns the row of each channel written, by channel name."""
    if layout is not None:
        from emo_assets.lib.audio.decode_stream import open_stream

        if not channels.sides_identical(open_stream(raw_path)):
            return {
                name: _write(
                    objectstore.join(out_dir, channels.flac_name(audio_id, name)),
                    stream_mono_16k(raw_path, channel=index),
                    data_root,
                )
                for index, name in layout.channels()
            }
    flac = objectstore.join(out_dir, channels.flac_name(audio_id, MONO))
    return {MONO: _write(flac, stream_mono_16k(raw_path), data_root)}


def resample_day(
    audio_files: pa.Table,
    raw_root: Path,
    out_dir: Path | str,
    day: str,
    previous: pa.Table | None = None,
    workers: int | None = None,
    data_root: Path | str | None = None,
    pool: Executor | None = None,
) -> StageOutput:
    """Decode, downmix and resample each distinct recording (by ``audio_id``) of the day; a
    two-channel recording under a ``channels.toml`` (lib/audio/channels.py) is split into its
    sides, one row and FLAC per channel, unless its sides are identical.

    A recording whose FLACs from a previous run of the day, for the same channels, are still in
    place is not decoded again. FLACs of recordings no longer in the day are removed: the day is
    the unit. ``out_dir`` is a local folder or an object-store URI. ``path`` is stored relative to
    ``data_root`` (the data directory holding ``out_dir``, or the lake URI holding it; the asset
    passes it), absolute without one. A previous row's absolute path (written before paths were
    relative) is made relative when it lies in ``data_root``; one outside it (a copied data
    directory's rows naming the original's FLACs) is not reused: the recording is decoded again
    into ``out_dir``.

    ``pool``: where the recordings are decoded (anything with an Executor's ``submit``; its workers
    must reach ``raw_root`` and ``out_dir``); default: ``workers`` threads of this process. The rows
    and the FLACs are the same wherever they are made.
    """
    date = dt.date.fromisoformat(day)
    sources: dict[str, list[str]] = {}
    for audio_id, source_path in zip(
        audio_files.column("audio_id").to_pylist(), audio_files.column("source_path").to_pylist()
    ):
        sources.setdefault(audio_id, []).append(source_path)

    n_channels = dict(zip(audio_files.column("audio_id").to_pylist(), audio_files.column("channels").to_pylist()))
    rejects = []
    layouts: dict[str, ChannelLayout | None] = {}
    for audio_id in sorted(sources):
        try:
            layout = channels.layout_for(raw_root, sorted(sources[audio_id])[0])
        except ChannelConfigError as exc:
            rejects.extend((src, audio_id, str(exc)) for src in sources[audio_id])
            continue
        layouts[audio_id] = layout if n_channels.get(audio_id) == 2 else None

    remote = objectstore.is_remote(out_dir)
    objects = set(objectstore.glob(objectstore.join(out_dir, "*.flac"))) if remote else None
    done: dict[str, dict[str, dict]] = {}
    if previous is not None:
        stored: dict[str, dict[str, dict]] = {}
        in_place: dict[str, bool] = {}
        for row in previous.to_pylist():
            flac = locate(row["path"], data_root)
            inside = data_root is None or _inside(flac, data_root)
            present = str(flac) in objects if remote else Path(flac).exists()
            in_place[row["audio_id"]] = in_place.get(row["audio_id"], True) and inside and present
            kept = {k: row[k] for k in ("duration_s", "rms_dbfs", "is_silent")}
            stored.setdefault(row["audio_id"], {})[row.get("channel") or MONO] = {
                "path": stored_path(flac, data_root) if inside else row["path"],
                **kept,
            }
        for audio_id, by_channel in stored.items():
            layout = layouts.get(audio_id)
            wanted = {MONO} if layout is None else set(layout.names)
            if audio_id in layouts and set(by_channel) == wanted and in_place[audio_id]:
                done[audio_id] = by_channel

    todo = sorted(a for a in layouts if a not in done)
    if not remote:
        out_dir.mkdir(parents=True, exist_ok=True)
    with nullcontext(pool) if pool is not None else ThreadPoolExecutor(workers or available_cores()) as pool:
        futures = {
            audio_id: pool.submit(
                _resample_one,
                raw_root / sorted(sources[audio_id])[0],
                out_dir,
                audio_id,
                layouts[audio_id],
                data_root,
            )
            for audio_id in todo
        }
        for audio_id, future in futures.items():
            try:
                done[audio_id] = future.result()
            except AudioDecodeError as exc:
                rejects.extend((src, audio_id, exc.reason) for src in sources[audio_id])
            except MachineFault:
                raise  # a full disk, a read-only or forbidden folder: the step fails, no file is blamed
            except (OSError, MemoryError) as exc:
                if is_machine_fault(exc):
                    raise machine_fault(
                        exc, "decoding and resampling", raw_root / sorted(sources[audio_id])[0]
                    ) from exc
                if isinstance(exc, FileNotFoundError) and not (raw_root / sorted(sources[audio_id])[0]).exists():
                    reason = "removed from the raw folder after it landed, before it was decoded"
                    rejects.extend((src, audio_id, reason) for src in sources[audio_id])
                    continue
                rejects.extend((src, audio_id, f"could not read or write audio: {exc}") for src in sources[audio_id])
            except Exception as exc:  # noqa: BLE001 - no input may break the stage; the reason is kept
                reason = f"decoder failed unexpectedly: {type(exc).__name__}: {exc}"
                rejects.extend((src, audio_id, reason) for src in sources[audio_id])

    kept = {Path(row["path"]).name for by_channel in done.values() for row in by_channel.values()}
    if remote:  # an upload is whole or absent: no temporary objects to sweep
        for stale in objects:
            if stale.rsplit("/", 1)[-1] not in kept:
                objectstore.remove(stale)
    else:
        for stale in out_dir.glob("*.flac"):
            if stale.name not in kept:
                stale.unlink()
        remove_stale_temps(out_dir, "*.flac")  # left by a killed earlier run of the day

    rows = [
        {"audio_id": audio_id, "channel": channel, **row, "date": date}
        for audio_id in sorted(done)
        for channel, row in sorted(done[audio_id].items())
    ]
    return StageOutput(
        rows=pa.Table.from_pylist(rows, schema=schemas.RESAMPLED_AUDIO),
        rejects=reject_rows(day, Stage.RESAMPLED_AUDIO, rejects),
    )
