"""Stage 3: one emotion2vec+ pass per recording -> embeddings, 9-class scores, quarantine.

Recordings are read from their 16 kHz FLAC in a background thread pool while the model runs,
so the model never waits on I/O. A recording already scored by the same ``model_id`` in an
earlier run of the day is reused, not run through the model again.

A recording longer than ``window_s`` is read and scored window by window (the rule of
:mod:`emo_assets.lib.model.windows`: even windows overlapping by 1 s, duration-weighted mean of their
embeddings and scores), so memory is bounded by one window whatever the length. A model that
windows by itself gets windows no longer than its own, hence the same numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.audio.load import AudioDecodeError, load_mono_16k
from emo_assets.lib.model.windows import plan_windows, weighted_mean
from emo_assets.lib.schemas import reject_rows

EMOTION_STAGE = schemas.Stage.EMOTION_SCORES


@dataclass(frozen=True)
class ScoringOutput:
    scores: pa.Table
    embeddings: pa.Table
    segments: pa.Table
    rejects: pa.Table
    reused: int  # recordings whose results came from an earlier run of the day
    inferred: int  # recordings run through the model


# Audio read ahead of the model, in seconds: 10 min of 16 kHz float32 is 38 MB. A long recording
# is read alone, so hours-long files never sit in memory several at a time.
PREFETCH_BUDGET_S = 600.0


def _prefetched(
    paths: list[Path], durations_s: list[float], workers: int, ahead: int = 8
) -> Iterator[tuple[Path, np.ndarray | Exception]]:
    """Yield (path, samples or the error) in order, reading up to ``ahead`` files in advance, and
    no more than :data:`PREFETCH_BUDGET_S` seconds of audio besides the one being yielded."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: list[tuple[Path, float, object]] = []
        queued_s = 0.0
        for path, seconds in zip(paths, durations_s):
            while futures and (len(futures) > ahead or queued_s + seconds > PREFETCH_BUDGET_S):
                done_path, done_s, future = futures.pop(0)
                queued_s -= done_s
                yield _result(done_path, future)
            futures.append((path, seconds, pool.submit(load_mono_16k, path)))
            queued_s += seconds
        for done_path, _, future in futures:
            yield _result(done_path, future)


def _result(path: Path, future) -> tuple[Path, np.ndarray | Exception]:
    try:
        return path, future.result()
    except (AudioDecodeError, OSError) as exc:
        return path, exc


WINDOW_OVERLAP_S = 1.0
SAMPLE_RATE = 16000


def score_long_recording(model, path: Path, window_s: float) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """(embedding, scores, windows) of a long 16 kHz recording, read from its FLAC one window at a time.

    ``windows`` are (start_s, end_s, scores) per window.
    """
    import soundfile as sf

    embeddings, scores, weights, windows = [], [], [], []
    with sf.SoundFile(str(path)) as flac:
        for start, end in plan_windows(flac.frames, window_s=window_s, overlap_s=WINDOW_OVERLAP_S):
            flac.seek(start)
            window = flac.read(end - start, dtype="float32")
            if window.ndim != 1 or len(window) != end - start:
                raise AudioDecodeError(f"resampled audio changed while read: window {start}-{end}", path)
            [result] = model.infer([window])
            embeddings.append(np.asarray(result.embedding, dtype=np.float32))
            scores.append(np.asarray(result.scores, dtype=np.float32))
            weights.append((end - start) / SAMPLE_RATE)
            windows.append((start / SAMPLE_RATE, end / SAMPLE_RATE, scores[-1]))
    return weighted_mean(embeddings, weights), weighted_mean(scores, weights), windows


def score_rows(audio_id: str, date: dt.date, model_id: str, scores: np.ndarray, **extra) -> dict:
    best = int(np.argmax(scores))
    return {
        "audio_id": audio_id,
        "date": date,
        "model_id": model_id,
        **extra,
        "emotion": schemas.EMOTION_LABELS[best],
        "confidence": float(scores[best]),
        **{label: float(s) for label, s in zip(schemas.EMOTION_LABELS, scores)},
    }


def _previous_results(
    model, scores: pa.Table | None, embeddings: pa.Table | None, segments: pa.Table | None
) -> dict[str, tuple[dict, np.ndarray, list[dict]]]:
    """Results of an earlier run of the day by the same model: (score row, embedding, segment rows)
    per audio_id, for recordings that have all three."""
    if scores is None or embeddings is None or segments is None:
        return {}
    vectors = {
        row["audio_id"]: np.asarray(row["embedding"], dtype=np.float32)
        for row in embeddings.to_pylist()
        if row["model_id"] == model.model_id and len(row["embedding"]) == model.embed_dim
    }
    windows: dict[str, list[dict]] = {}
    for row in segments.to_pylist():
        if row["model_id"] == model.model_id:
            windows.setdefault(row["audio_id"], []).append(row)
    return {
        row["audio_id"]: (row, vectors[row["audio_id"]], windows[row["audio_id"]])
        for row in scores.to_pylist()
        if row["model_id"] == model.model_id and row["audio_id"] in vectors and row["audio_id"] in windows
    }


def segment_row(audio_id: str, date: dt.date, model_id: str, start_s: float, end_s: float, scores) -> dict:
    return score_rows(audio_id, date, model_id, np.asarray(scores), start_s=float(start_s), end_s=float(end_s))


def score_day(
    resampled: pa.Table,
    audio_files: pa.Table,
    model,
    day: str,
    previous_scores: pa.Table | None = None,
    previous_embeddings: pa.Table | None = None,
    previous_segments: pa.Table | None = None,
    workers: int = 2,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    window_s: float = 30.0,
) -> ScoringOutput:
    """Score every resampled recording of the day with ``model`` (an EmotionModel)."""
    date = dt.date.fromisoformat(day)
    sources: dict[str, list[str]] = {}
    for audio_id, src in zip(audio_files.column("audio_id").to_pylist(), audio_files.column("source_path").to_pylist()):
        sources.setdefault(audio_id, []).append(src)

    reusable = _previous_results(model, previous_scores, previous_embeddings, previous_segments)
    paths = dict(zip(resampled.column("audio_id").to_pylist(), resampled.column("path").to_pylist()))
    durations = dict(zip(resampled.column("audio_id").to_pylist(), resampled.column("duration_s").to_pylist()))
    score_out: dict[str, dict] = {}
    emb_out: dict[str, np.ndarray] = {}
    seg_out: dict[str, list[dict]] = {}
    rejects: list[tuple[str, str | None, str]] = []
    for audio_id in sorted(paths):
        if audio_id in reusable:
            row, emb, segments = reusable[audio_id]
            score_out[audio_id] = {**row, "date": date}
            emb_out[audio_id] = emb
            seg_out[audio_id] = [{**seg, "date": date} for seg in segments]
    pending = [a for a in sorted(paths) if a not in score_out]
    long_ids = [a for a in pending if (durations[a] or 0.0) > window_s]
    todo = [a for a in pending if (durations[a] or 0.0) <= window_s]

    def reject(audio_id: str, reason: str) -> None:
        rejects.extend((src, audio_id, reason) for src in sources.get(audio_id, []))

    batch_ids: list[str] = []
    batch_wavs: list[np.ndarray] = []
    inferred = 0

    def flush() -> None:
        nonlocal inferred
        if not batch_ids:
            return
        inferred += len(batch_ids)
        try:
            results = model.infer(batch_wavs)
        except Exception:
            # One bad recording must not take its batch with it: retry one by one.
            results = []
            for audio_id, wav in zip(batch_ids, batch_wavs):
                try:
                    results.append(model.infer([wav])[0])
                except Exception as exc:  # noqa: BLE001 - every failure becomes a quarantine row
                    reject(audio_id, f"inference failed: {type(exc).__name__}: {exc}")
                    results.append(None)
        for audio_id, result in zip(batch_ids, results):
            if result is None:
                continue
            score_out[audio_id] = score_rows(audio_id, date, model.model_id, result.scores)
            emb_out[audio_id] = np.asarray(result.embedding, dtype=np.float32)
            seg_out[audio_id] = [
                segment_row(audio_id, date, model.model_id, seg.start_s, seg.end_s, seg.scores)
                for seg in result.segments
            ]
        batch_ids.clear()
        batch_wavs.clear()

    todo_paths = [Path(paths[a]) for a in todo]
    for n, (_path, wav) in enumerate(_prefetched(todo_paths, [durations[a] or 0.0 for a in todo], workers), start=1):
        audio_id = todo[n - 1]
        if isinstance(wav, Exception):
            reject(audio_id, f"resampled audio unreadable: {getattr(wav, 'reason', wav)}")
        elif len(wav) < model.min_samples:
            reject(
                audio_id,
                f"too short: {len(wav)} samples ({len(wav) / 16000 * 1000:.0f} ms) < the model's minimum "
                f"{model.min_samples} samples ({model.min_samples / 16000 * 1000:.0f} ms)",
            )
        else:
            batch_ids.append(audio_id)
            batch_wavs.append(wav)
            if len(batch_ids) >= batch_size or sum(map(len, batch_wavs)) >= PREFETCH_BUDGET_S * 16000:
                flush()
        if progress is not None:
            progress(n, len(pending))
    flush()

    for n, audio_id in enumerate(long_ids, start=len(todo) + 1):
        inferred += 1
        try:
            embedding, scores, windows = score_long_recording(model, Path(paths[audio_id]), window_s)
        except (AudioDecodeError, OSError) as exc:
            reject(audio_id, f"resampled audio unreadable: {getattr(exc, 'reason', exc)}")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a quarantine row
            reject(audio_id, f"inference failed: {type(exc).__name__}: {exc}")
        else:
            score_out[audio_id] = score_rows(audio_id, date, model.model_id, scores)
            emb_out[audio_id] = embedding
            seg_out[audio_id] = [segment_row(audio_id, date, model.model_id, *w) for w in windows]
        if progress is not None:
            progress(n, len(pending))

    ids = sorted(score_out)
    emb_schema = schemas.emotion_embeddings_schema(model.embed_dim)
    embeddings_table = pa.table(
        {
            "audio_id": pa.array(ids, pa.string()),
            "date": pa.array([date] * len(ids), pa.date32()),
            "model_id": pa.array([model.model_id] * len(ids), pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate([emb_out[a] for a in ids]) if ids else np.zeros(0, np.float32), pa.float32()),
                model.embed_dim,
            ),
        },
        schema=emb_schema,
    )
    return ScoringOutput(
        scores=pa.Table.from_pylist([score_out[a] for a in ids], schema=schemas.EMOTION_SCORES),
        embeddings=embeddings_table,
        segments=pa.Table.from_pylist(
            [row for a in ids for row in sorted(seg_out.get(a, []), key=lambda r: r["start_s"])],
            schema=schemas.EMOTION_SEGMENTS,
        ),
        rejects=reject_rows(day, EMOTION_STAGE, rejects),
        reused=len(reusable.keys() & set(ids)),
        inferred=inferred,
    )


def frame_table(model, resampled: pa.Table, day: str, audio_ids: list[str]) -> pa.Table:
    """Per-frame embeddings and scores (50 Hz) of ``audio_ids``: the opt-in frame granularity.

    A second pass over the audio (funasr's ``granularity="frame"``); a long recording is windowed
    by the engine and its frames stitched without duplicates.
    """
    date = dt.date.fromisoformat(day)
    paths = dict(zip(resampled.column("audio_id").to_pylist(), resampled.column("path").to_pylist()))
    columns: dict[str, list] = {name: [] for name in schemas.emotion_frames_schema(model.embed_dim).names}
    vectors = []
    for audio_id in audio_ids:
        out = model.engine.frames(load_mono_16k(Path(paths[audio_id])))
        best = out.scores.argmax(axis=1)
        n = len(best)
        columns["audio_id"] += [audio_id] * n
        columns["date"] += [date] * n
        columns["model_id"] += [model.model_id] * n
        columns["frame"] += list(range(n))
        columns["start_s"] += out.times_s.tolist()
        columns["emotion"] += [schemas.EMOTION_LABELS[i] for i in best]
        columns["confidence"] += out.scores.max(axis=1).tolist()
        for j, label in enumerate(schemas.EMOTION_LABELS):
            columns[label] += out.scores[:, j].tolist()
        vectors.append(out.embeddings.astype(np.float32).reshape(-1))
    flat = pa.array(np.concatenate(vectors) if vectors else np.zeros(0, np.float32), pa.float32())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, model.embed_dim)
    return pa.table(columns, schema=schemas.emotion_frames_schema(model.embed_dim))
