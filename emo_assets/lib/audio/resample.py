"""Stage 2: every readable recording of a day as 16 kHz mono FLAC, decoded in a worker pool."""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.audio.load import SILENT_BELOW_DBFS, AudioDecodeError, stream_mono_16k, write_mono_16k_flac
from emo_assets.lib.files.atomic import remove_stale_temps
from emo_assets.lib.files.faults import MachineFault, is_machine_fault, machine_fault
from emo_assets.lib.schemas import Stage, StageOutput, reject_rows


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


def _resample_one(raw_path: Path, flac_path: Path) -> dict:
    """Decode, downmix, resample and write block by block: memory bounded for any length."""
    written = write_mono_16k_flac(flac_path, stream_mono_16k(raw_path))
    return {
        "path": str(flac_path),
        "duration_s": written.duration_s,
        "rms_dbfs": written.rms_dbfs,
        "is_silent": written.rms_dbfs < SILENT_BELOW_DBFS,
    }


def resample_day(
    audio_files: pa.Table,
    raw_root: Path,
    out_dir: Path,
    day: str,
    previous: pa.Table | None = None,
    workers: int | None = None,
) -> StageOutput:
    """Decode, downmix and resample each distinct recording (by ``audio_id``) of the day.

    A recording whose FLAC from a previous run of the day is still in place is not decoded again.
    FLACs of recordings no longer in the day are removed: the day is the unit.
    """
    date = dt.date.fromisoformat(day)
    sources: dict[str, list[str]] = {}
    for audio_id, source_path in zip(
        audio_files.column("audio_id").to_pylist(), audio_files.column("source_path").to_pylist()
    ):
        sources.setdefault(audio_id, []).append(source_path)

    done = {}
    if previous is not None:
        for row in previous.to_pylist():
            if row["audio_id"] in sources and Path(row["path"]).exists():
                done[row["audio_id"]] = {k: row[k] for k in ("path", "duration_s", "rms_dbfs", "is_silent")}

    todo = sorted(a for a in sources if a not in done)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers or available_cores()) as pool:
        futures = {
            audio_id: pool.submit(_resample_one, raw_root / sorted(sources[audio_id])[0], out_dir / f"{audio_id}.flac")
            for audio_id in todo
        }
        rejects = []
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

    for stale in out_dir.glob("*.flac"):
        if stale.stem not in done:
            stale.unlink()
    remove_stale_temps(out_dir, "*.flac")  # left by a killed earlier run of the day

    rows = [
        {"audio_id": audio_id, "channel": schemas.MONO, **done[audio_id], "date": date} for audio_id in sorted(done)
    ]
    return StageOutput(
        rows=pa.Table.from_pylist(rows, schema=schemas.RESAMPLED_AUDIO),
        rejects=reject_rows(day, Stage.RESAMPLED_AUDIO, rejects),
    )
