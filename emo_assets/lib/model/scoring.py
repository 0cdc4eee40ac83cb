"""Stage 3: one emotion2vec+ pass per recording -> embeddings, 9-class scores, quarantine.

Each recording reaches the model as an :class:`~emo_assets.lib.model.scorer.AudioReader` made by
the caller's ``open_audio(path)`` (the asset passes ``lib/audio``'s reader of the day's 16 kHz
FLAC); the model reads and scores it window by window (:mod:`emo_assets.lib.model.engine`), reading
the next windows while the current ones run, so memory is bounded whatever the length. A recording
already scored by the same ``model_id`` with the same window setting (its stored segments are the
windows the current ``window_s`` cuts) in an earlier run of the day is reused, not run through the
model again, unless its stored rows fail :func:`unsound_score_rows` (a bit changed after they were
written): then it is scored again and named in ``ScoringOutput.repaired``. The machine's faults (full disk, I/O, memory) raise MachineFault; they are never a
quarantine row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.files.faults import MachineFault, is_machine_fault, machine_fault
from emo_assets.lib.model.scorer import AudioReader, AudioReadError, EmotionScorer
from emo_assets.lib.model.windows import plan_windows, too_short
from emo_assets.lib.schemas import SAMPLE_RATE, reject_rows

EMOTION_STAGE = schemas.Stage.EMOTION_SCORES

OpenAudio = Callable[[str], AudioReader]


@dataclass(frozen=True)
class ScoringOutput:
    scores: pa.Table
    embeddings: pa.Table
    segments: pa.Table
    rejects: pa.Table
    reused: int  # recordings whose results came from an earlier run of the day
    inferred: int  # recordings run through the model
    # recordings whose stored rows of an earlier run failed the row checks, scored again
    repaired: tuple[str, ...] = ()


# How far a recording's nine scores may sum from 1 (the ``scores_sum_to_one`` check's rule).
SCORE_SUM_TOLERANCE = 1e-5


def _score_matrix(rows: pa.Table) -> np.ndarray:
    if not rows.num_rows:
        return np.zeros((0, len(schemas.EMOTION_LABELS)))
    return np.column_stack([rows.column(c).to_numpy() for c in schemas.EMOTION_LABELS]).astype(np.float64)


def scores_off(rows: pa.Table) -> list[str]:
    """The ``audio_id``s of rows whose nine scores are not a probability distribution: a score that
    is NaN or infinite, or a sum more than :data:`SCORE_SUM_TOLERANCE` from 1."""
    matrix = _score_matrix(rows)
    bad = ~np.isfinite(matrix).all(axis=1) | ~(np.abs(matrix.sum(axis=1) - 1.0) <= SCORE_SUM_TOLERANCE)
    return sorted({a for a, b in zip(rows.column("audio_id").to_pylist(), bad) if b})


def unsound_score_rows(rows: pa.Table) -> list[str]:
    """The ``audio_id``s of ``emotion_scores`` or ``emotion_segments`` rows that cannot be what the
    model wrote: :func:`scores_off`, or ``confidence`` not the top score, or ``emotion`` not a class
    holding it."""
    matrix = _score_matrix(rows)
    bad = set(scores_off(rows))
    if rows.num_rows:
        top = matrix.max(axis=1)
        confidence = rows.column("confidence").to_numpy().astype(np.float64)
        labels = list(schemas.EMOTION_LABELS)
        named = np.array(
            [matrix[i, labels.index(e)] if e in labels else np.nan for i, e in enumerate(rows["emotion"].to_pylist())]
        )
        wrong = (confidence != top) | (named != top)
        bad |= {a for a, w in zip(rows.column("audio_id").to_pylist(), wrong) if w}
    return sorted(bad)


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
) -> tuple[dict[str, tuple[dict, np.ndarray, list[dict]]], set[str]]:
    """Results of an earlier run of the day by the same model and window setting: (score row,
    embedding, segment rows) per audio_id, for recordings that have all three and whose rows are
    sound; and the audio_ids whose rows are not (a score row or segment :func:`unsound_score_rows`
    names, an embedding with a NaN or infinite value)."""
    if scores is None or embeddings is None or segments is None:
        return {}, set()
    unsound = set(unsound_score_rows(scores)) | set(unsound_score_rows(segments))
    vectors = {}
    for row in embeddings.to_pylist():
        if row["model_id"] == model.model_id and len(row["embedding"]) == model.embed_dim:
            vectors[row["audio_id"]] = np.asarray(row["embedding"], dtype=np.float32)
            if not np.isfinite(vectors[row["audio_id"]]).all():
                unsound.add(row["audio_id"])
    windows: dict[str, list[dict]] = {}
    for row in segments.to_pylist():
        if row["model_id"] == model.model_id:
            windows.setdefault(row["audio_id"], []).append(row)
    same_window = {a for a, segs in windows.items() if _windowed_as_now(model, segs)}
    reusable = {
        row["audio_id"]: (row, vectors[row["audio_id"]], windows[row["audio_id"]])
        for row in scores.to_pylist()
        if row["model_id"] == model.model_id
        and row["audio_id"] in vectors
        and row["audio_id"] in same_window
        and row["audio_id"] not in unsound
    }
    return reusable, unsound


def _windowed_as_now(model, segments: list[dict]) -> bool:
    """True when the stored segments are the windows the current settings would cut: a recording
    scored under another EMO_WINDOW_S is scored again, so one day never mixes two window settings."""
    spans = sorted((round(s["start_s"] * SAMPLE_RATE), round(s["end_s"] * SAMPLE_RATE)) for s in segments)
    length = spans[-1][1]
    planned = plan_windows(length, window_s=model.settings.window_s, overlap_s=model.settings.window_overlap_s)
    return len(planned) == len(spans) and all(
        abs(a - c) <= 1 and abs(b - d) <= 1 for (a, b), (c, d) in zip(spans, planned, strict=True)
    )


def segment_row(audio_id: str, date: dt.date, model_id: str, start_s: float, end_s: float, scores) -> dict:
    return score_rows(audio_id, date, model_id, np.asarray(scores), start_s=float(start_s), end_s=float(end_s))


def score_day(
    resampled: pa.Table,
    audio_files: pa.Table,
    model: EmotionScorer,
    day: str,
    *,
    open_audio: OpenAudio,
    previous_scores: pa.Table | None = None,
    previous_embeddings: pa.Table | None = None,
    previous_segments: pa.Table | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> ScoringOutput:
    """Score every resampled recording of the day with ``model``, ``batch_size`` recordings per call.

    ``open_audio(path)`` gives the reader of a row of ``resampled``; it and the reader raise
    ValueError or OSError for unreadable audio, which becomes a quarantine row.
    """
    date = dt.date.fromisoformat(day)
    sources: dict[str, list[str]] = {}
    for audio_id, src in zip(audio_files.column("audio_id").to_pylist(), audio_files.column("source_path").to_pylist()):
        sources.setdefault(audio_id, []).append(src)

    reusable, unsound = _previous_results(model, previous_scores, previous_embeddings, previous_segments)
    paths = dict(zip(resampled.column("audio_id").to_pylist(), resampled.column("path").to_pylist()))
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

    def reject(audio_id: str, reason: str) -> None:
        rejects.extend((src, audio_id, reason) for src in sources.get(audio_id, []))

    def unreadable(audio_id: str, exc: BaseException) -> None:
        reject(audio_id, f"resampled audio unreadable: {getattr(exc, 'reason', exc)}")

    batch: list[tuple[str, AudioReader]] = []
    inferred = 0

    def flush() -> None:
        nonlocal inferred
        if not batch:
            return
        inferred += len(batch)
        try:
            results = model.score([reader for _, reader in batch])
        except Exception:
            # One bad recording must not take its batch with it: retry one by one.
            results = []
            for audio_id, reader in batch:
                try:
                    results.append(model.score([reader])[0])
                except AudioReadError as exc:
                    unreadable(audio_id, exc)
                    results.append(None)
                except MachineFault:
                    raise  # the disk or the object store failed, not the recording: the step fails
                except (OSError, MemoryError) as exc:
                    if is_machine_fault(exc):
                        raise machine_fault(exc, "scoring", paths[audio_id]) from exc
                    reject(audio_id, f"inference failed: {type(exc).__name__}: {exc}")
                    results.append(None)
                except Exception as exc:  # noqa: BLE001 - every failure becomes a quarantine row
                    reject(audio_id, f"inference failed: {type(exc).__name__}: {exc}")
                    results.append(None)
        for (audio_id, _), result in zip(batch, results, strict=True):
            if result is None:
                continue
            score_out[audio_id] = score_rows(audio_id, date, model.model_id, result.scores)
            emb_out[audio_id] = np.asarray(result.embedding, dtype=np.float32)
            seg_out[audio_id] = [
                segment_row(audio_id, date, model.model_id, seg.start_s, seg.end_s, seg.scores)
                for seg in result.segments
            ]
        batch.clear()

    for n, audio_id in enumerate(pending, start=1):
        try:
            reader = open_audio(paths[audio_id])
        except (ValueError, OSError, MemoryError) as exc:
            if is_machine_fault(exc):  # our own FLAC unreadable for the machine's reasons: fail, blame no file
                raise machine_fault(exc, "reading the 16 kHz FLAC", paths[audio_id]) from exc
            unreadable(audio_id, exc)
        else:
            reason = too_short(reader.num_samples, model.min_samples)
            if reason is not None:
                reject(audio_id, reason)
            else:
                batch.append((audio_id, reader))
                if len(batch) >= batch_size:
                    flush()
        if progress is not None:
            progress(n, len(pending))
    flush()

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
        repaired=tuple(sorted(unsound & set(paths))),
    )


def frame_batches(
    model: EmotionScorer, resampled: pa.Table, day: str, audio_ids: list[str], *, open_audio: OpenAudio
) -> Iterator[pa.RecordBatch]:
    """Per-frame embeddings and scores (50 Hz) of ``audio_ids``, the opt-in frame granularity, as
    ``emotion_frames`` record batches of one window each: written as they come, the day's frames never
    sit in memory together.

    A second pass over the audio (funasr's ``granularity="frame"``), read and run a few windows at a
    time; the model stitches a long recording's windows without duplicate frames.
    """
    date = dt.date.fromisoformat(day)
    paths = dict(zip(resampled.column("audio_id").to_pylist(), resampled.column("path").to_pylist()))
    schema = schemas.emotion_frames_schema(model.embed_dim)
    for audio_id in audio_ids:
        first = 0
        for chunk in model.frames(open_audio(paths[audio_id])):
            n = len(chunk.times_s)
            best = chunk.scores.argmax(axis=1)
            columns = {
                "audio_id": pa.array([audio_id] * n, pa.string()),
                "date": pa.array([date] * n, pa.date32()),
                "model_id": pa.array([model.model_id] * n, pa.string()),
                "frame": pa.array(np.arange(first, first + n, dtype=np.int32)),
                "start_s": pa.array(chunk.times_s, pa.float64()),
                "emotion": pa.array([schemas.EMOTION_LABELS[i] for i in best], pa.string()),
                "confidence": pa.array(chunk.scores.max(axis=1), pa.float32()),
                **{label: pa.array(chunk.scores[:, j], pa.float32()) for j, label in enumerate(schemas.EMOTION_LABELS)},
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(chunk.embeddings.astype(np.float32).reshape(-1), pa.float32()), model.embed_dim
                ),
            }
            yield pa.record_batch(columns, schema=schema)
            first += n
