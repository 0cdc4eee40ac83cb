"""Stage 1: account for every file that landed for a day and describe the readable ones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.audio.load import AudioDecodeError, probe_audio
from emo_assets.lib.audio.raw_scan import scan_day, sha256_file
from emo_assets.lib.audio.settle import REASON_CHANGED, deferred_rows, has_changed, split_settled
from emo_assets.lib.files.faults import is_machine_fault, machine_fault
from emo_assets.lib.schemas import Stage, StageOutput, reject_rows


def ingest_day(
    raw_root: Path,
    day: str,
    ingested_at: dt.datetime,
    previous: pa.Table | None = None,
    settle_s: float = 0.0,
    now: float | None = None,
    erased: Callable[[str], bool] | None = None,
) -> StageOutput:
    """Scan ``raw_root/day``: one ``audio_files`` row per readable audio file, a reject per other file.

    A file already ingested with the same bytes keeps its first ``ingested_at``, so re-running
    an unchanged day reproduces the table exactly. A file still being written (the settle rule,
    ``settle_s``: lib/audio/settle.py) gets neither: it is in ``deferred``, for the next run.
    A file whose bytes were erased (``erased(audio_id)``: lib/files/tombstones.py) is deleted on sight
    and gets nothing: an erasure is not undone by the same recording landing again.
    """
    first_seen = {}
    if previous is not None:
        for row in previous.select(["source_path", "audio_id", "ingested_at"]).to_pylist():
            first_seen[(row["source_path"], row["audio_id"])] = row["ingested_at"]
    files, refused = scan_day(raw_root, day)
    files, deferred = split_settled(files, settle_s, now)
    rows: list[dict] = []
    rejects: list[tuple[str, str | None, str]] = [(src, None, reason) for src, reason in refused]
    date = dt.date.fromisoformat(day)
    for raw in files:
        try:
            audio_id = sha256_file(raw.path)
        except OSError as exc:
            if is_machine_fault(exc, own_file=False):
                raise machine_fault(exc, "reading a landed file", raw.path) from exc
            rejects.append((raw.source_path, None, f"unreadable file: {exc.strerror or exc}"))
            continue
        if erased is not None and erased(audio_id):
            raw.path.unlink(missing_ok=True)
            continue
        if raw.size_bytes == 0:
            rejects.append((raw.source_path, audio_id, "empty file (0 bytes)"))
            continue
        try:
            info = probe_audio(raw.path)
        except AudioDecodeError as exc:
            rejects.append((raw.source_path, audio_id, exc.reason))
            continue
        except (OSError, MemoryError) as exc:
            if is_machine_fault(exc, own_file=False):
                raise machine_fault(exc, "reading a landed file", raw.path) from exc
            rejects.append((raw.source_path, audio_id, f"unreadable file: {exc.strerror or exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - no input may break the stage; the reason is kept
            rejects.append((raw.source_path, audio_id, f"probe failed unexpectedly: {type(exc).__name__}: {exc}"))
            continue
        rows.append(
            {
                "audio_id": audio_id,
                "source_path": raw.source_path,
                "size_bytes": raw.size_bytes,
                "format": info.format,
                "sample_rate": info.sample_rate,
                "channels": info.channels,
                "duration_s": info.duration_s,
                "ingested_at": first_seen.get((raw.source_path, audio_id), ingested_at),
                "date": date,
            }
        )
    if settle_s > 0:  # written to while the stage read the day: not whole, whatever the probe said
        moved = {raw.source_path: raw for raw in files if has_changed(raw)}
        rows = [r for r in rows if r["source_path"] not in moved]
        rejects = [r for r in rejects if r[0] not in moved]
        deferred += [(raw, REASON_CHANGED) for raw in moved.values()]
    rows.sort(key=lambda r: r["source_path"])
    return StageOutput(
        rows=pa.Table.from_pylist(rows, schema=schemas.AUDIO_FILES),
        rejects=reject_rows(day, Stage.AUDIO_FILES, rejects),
        deferred=deferred_rows(day, deferred),
    )
