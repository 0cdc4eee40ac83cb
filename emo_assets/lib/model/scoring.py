"""Stage 3: one emotion2vec+ pass per recording (per channel of a two-channel call) -> embeddings,
9-class scores, segments (speech turns or fixed windows), quarantine.

Each recording reaches the model as an :class:`~emo_assets.lib.model.scorer.AudioReader` made by
the caller's ``open_audio(path)`` (the asset passes ``lib/audio``'s reader of the day's 16 kHz
FLAC); the model reads and scores it window by window (:mod:`emo_assets.lib.model.engine`), reading
the next windows while the current ones run, so memory is bounded whatever the length. A recording
already scored by the same ``model_id`` with the same window setting (its stored segments are the
windows the current ``window_s`` cuts) in an earlier run of the day is reused, not run through the
model again, unless its stored rows fail :func:`unsound_score_rows` (a bit changed after they were
written): then that channel is scored again and the recording named in ``ScoringOutput.repaired``.
The machine's faults (full disk, I/O, memory) raise MachineFault; they are never a quarantine row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from emo_assets.lib import schemas
from emo_assets.lib.files.faults import MachineFault, is_machine_fault, machine_fault
from emo_assets.lib.model.scorer import AudioReader, AudioReadError, EmotionScorer, SpanReader
from emo_assets.lib.model.windows import plan_windows, too_short, weighted_mean
from emo_assets.lib.schemas import SAMPLE_RATE, reject_rows

EMOTION_STAGE = schemas.Stage.EMOTION_SCORES

OpenAudio = Callable[[str], AudioReader]


class SpeechTurn(Protocol):
    """A speech turn as the caller's ``find_turns`` gives it (``lib/audio/turns.py`` in the pipeline):
    samples ``[start, end)`` of the recording and the share of it heard as speech."""

    start: int
    end: int
    speech_share: float


FindTurns = Callable[[AudioReader], Sequence[SpeechTurn]]


@dataclass(frozen=True)
class ScoringOutput:
    scores: pa.Table
    embeddings: pa.Table
    segments: pa.Table
    rejects: pa.Table
    reused: int  # recordings (channels) whose results came from an earlier run of the day
    inferred: int  # recordings (channels) run through the model
    without_speech: int = 0  # channels of scored recordings in which no speech turn was found
    # recordings a channel of which had stored rows of an earlier run that failed the row checks, scored again
    repaired: tuple[str, ...] = ()


# How far a recording's nine scores may sum from 1 (the ``scores_sum_to_one`` check's rule).
SCORE_SUM_TOLERANCE = 1e-5


def _score_matrix(rows: pa.Table) -> np.ndarray:
    if not rows.num_rows:
        return np.zeros((0, len(schemas.EMOTION_LABELS)))
    return np.column_stack([rows.column(c).to_numpy() for c in schemas.EMOTION_LABELS]).astype(np.float64)


def _scores_off_mask(rows: pa.Table) -> np.ndarray:
    matrix = _score_matrix(rows)
    return ~np.isfinite(matrix).all(axis=1) | ~(np.abs(matrix.sum(axis=1) - 1.0) <= SCORE_SUM_TOLERANCE)


def scores_off(rows: pa.Table) -> list[str]:
    """The ``audio_id``s of rows whose nine scores are not a probability distribution: a score that
    is NaN or infinite, or a sum more than :data:`SCORE_SUM_TOLERANCE` from 1."""
    bad = _scores_off_mask(rows)
    return sorted({a for a, b in zip(rows.column("audio_id").to_pylist(), bad) if b})


def _unsound_mask(rows: pa.Table) -> np.ndarray:
    """Per row: :func:`scores_off`, or ``confidence`` not the top score, or ``emotion`` not a class holding it."""
    bad = _scores_off_mask(rows)
    if rows.num_rows:
        matrix = _score_matrix(rows)
        top = matrix.max(axis=1)
        confidence = rows.column("confidence").to_numpy().astype(np.float64)
        labels = list(schemas.EMOTION_LABELS)
        named = np.array(
            [matrix[i, labels.index(e)] if e in labels else np.nan for i, e in enumerate(rows["emotion"].to_pylist())]
        )
        bad = bad | (confidence != top) | (named != top)
    return bad


def unsound_score_rows(rows: pa.Table) -> list[str]:
    """The ``audio_id``s of ``emotion_scores`` or ``emotion_segments`` rows that cannot be what the
    model wrote: :func:`scores_off`, or ``confidence`` not the top score, or ``emotion`` not a class
    holding it."""
    return sorted({a for a, b in zip(rows.column("audio_id").to_pylist(), _unsound_mask(rows)) if b})


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


Unit = tuple[str, str]  # (audio_id, channel): what is scored as one voice


def _channel(row: dict) -> str:
    """A row's channel; rows written before channels existed are mono."""
    return row.get("channel") or schemas.MONO


def _previous_results(
    model, scores: pa.Table | None, embeddings: pa.Table | None, segments: pa.Table | None, *, turns: bool
) -> tuple[dict[Unit, tuple[dict, np.ndarray, list[dict]]], set[Unit]]:
    """Results of an earlier run of the day by the same model and segment setting: (score row,
    embedding, segment rows) per (audio_id, channel), for those that have all three and whose rows
    are sound; and the (audio_id, channel)s whose rows are not (a score row or segment
    :func:`unsound_score_rows` names, an embedding with a NaN or infinite value)."""
    if scores is None or embeddings is None or segments is None:
        return {}, set()
    unsound = _unsound_units(scores) | _unsound_units(segments)
    vectors = {}
    for row in embeddings.to_pylist():
        if row["model_id"] == model.model_id and len(row["embedding"]) == model.embed_dim:
            unit = (row["audio_id"], _channel(row))
            vectors[unit] = np.asarray(row["embedding"], dtype=np.float32)
            if not np.isfinite(vectors[unit]).all():
                unsound.add(unit)
    stored: dict[Unit, list[dict]] = {}
    for row in segments.to_pylist():
        if row["model_id"] == model.model_id:
            stored.setdefault((row["audio_id"], _channel(row)), []).append(row)
    same = {u for u, segs in stored.items() if _segmented_as_now(model, segs, turns=turns)}
    out = {}
    for row in scores.to_pylist():
        unit = (row["audio_id"], _channel(row))
        if row["model_id"] == model.model_id and unit in vectors and unit in same and unit not in unsound:
            out[unit] = (row, vectors[unit], stored[unit])
    return out, unsound


def _unsound_units(rows: pa.Table) -> set[Unit]:
    """The (audio_id, channel)s of the rows :func:`unsound_score_rows` names."""
    ids = rows.column("audio_id").to_pylist()
    channels = rows.column("channel").to_pylist() if "channel" in rows.column_names else [None] * len(ids)
    return {(a, c or schemas.MONO) for a, c, b in zip(ids, channels, _unsound_mask(rows)) if b}


def _segmented_as_now(model, segments: list[dict], *, turns: bool) -> bool:
    """True when the stored segments are what the current settings would make, so one day never
    mixes two settings: turns (rows with a speech share) under EMO_SEGMENTS=turns, each short
    enough to be one window of the current EMO_WINDOW_S; or, under EMO_SEGMENTS=windows, the
    windows the current EMO_WINDOW_S cuts. A stored turn does not say how it was windowed: one
    longer than an earlier, smaller EMO_WINDOW_S but within the current one is reused as it was
    scored then (raising EMO_WINDOW_S between two runs of a day); a turn longer than the current
    window is always scored again."""
    if turns:
        return all(
            s.get("speech_share") is not None and s["end_s"] - s["start_s"] <= model.settings.window_s for s in segments
        )
    if any(s.get("speech_share") is not None for s in segments):
        return False
    spans = sorted((round(s["start_s"] * SAMPLE_RATE), round(s["end_s"] * SAMPLE_RATE)) for s in segments)
    length = spans[-1][1]
    planned = plan_windows(length, window_s=model.settings.window_s, overlap_s=model.settings.window_overlap_s)
    return len(planned) == len(spans) and all(
        abs(a - c) <= 1 and abs(b - d) <= 1 for (a, b), (c, d) in zip(spans, planned, strict=True)
    )


def segment_row(
    audio_id: str,
    date: dt.date,
    model_id: str,
    start_s: float,
    end_s: float,
    scores,
    *,
    channel: str = schemas.MONO,
    turn: int = 0,
    speech_share: float | None = None,
) -> dict:
    return score_rows(
        audio_id,
        date,
        model_id,
        np.asarray(scores),
        channel=channel,
        turn=turn,
        start_s=float(start_s),
        end_s=float(end_s),
        speech_share=speech_share,
    )


@dataclass(frozen=True)
class _Pending:
    """One voice waiting for the model: its clips (the whole recording, or one per speech turn)."""

    unit: Unit
    clips: list[AudioReader]
    turns: list[SpeechTurn] | None  # None: fixed windows


def _resampled_units(resampled: pa.Table) -> dict[Unit, str]:
    """(audio_id, channel) -> 16 kHz FLAC path; a table written before channels existed is mono."""
    ids = resampled.column("audio_id").to_pylist()
    channels = resampled.column("channel").to_pylist() if "channel" in resampled.column_names else [None] * len(ids)
    return {(a, c or schemas.MONO): p for a, c, p in zip(ids, channels, resampled.column("path").to_pylist())}


def score_day(
    resampled: pa.Table,
    audio_files: pa.Table,
    model: EmotionScorer,
    day: str,
    *,
    open_audio: OpenAudio,
    find_turns: FindTurns | None = None,
    previous_scores: pa.Table | None = None,
    previous_embeddings: pa.Table | None = None,
    previous_segments: pa.Table | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> ScoringOutput:
    """Score every resampled recording (each channel of it) of the day with ``model``, ``batch_size``
    voices per call.

    With ``find_turns`` (EMO_SEGMENTS=turns), each voice is cut into its speech turns and each turn
    is scored as a clip of its own (the model windows a turn longer than ``window_s``); the voice's
    scores and embedding are the duration-weighted mean over its turns, silence is never scored,
    and a recording with no speech in any channel is quarantined (``schemas.NO_SPEECH``). Without
    it, the whole recording is scored in fixed windows.

    ``open_audio(path)`` gives the reader of a row of ``resampled``; it and the reader raise
    ValueError or OSError for unreadable audio, which becomes a quarantine row. A recording one of
    whose channels fails is quarantined as a whole: none of its channels is kept.
    """
    date = dt.date.fromisoformat(day)
    sources: dict[str, list[str]] = {}
    for audio_id, src in zip(audio_files.column("audio_id").to_pylist(), audio_files.column("source_path").to_pylist()):
        sources.setdefault(audio_id, []).append(src)

    turns_on = find_turns is not None
    reusable, unsound = _previous_results(
        model, previous_scores, previous_embeddings, previous_segments, turns=turns_on
    )
    paths = _resampled_units(resampled)
    score_out: dict[Unit, dict] = {}
    emb_out: dict[Unit, np.ndarray] = {}
    seg_out: dict[Unit, list[dict]] = {}
    failed: dict[str, str] = {}  # audio_id -> why the recording is quarantined
    silent: set[Unit] = set()
    for unit in sorted(paths):
        if unit in reusable:
            row, emb, segments = reusable[unit]
            score_out[unit] = {**row, "date": date, "channel": unit[1]}
            emb_out[unit] = emb
            ordered = sorted(segments, key=lambda r: r["start_s"])
            seg_out[unit] = [
                {**seg, "date": date, "channel": unit[1], "turn": i, "speech_share": seg.get("speech_share")}
                for i, seg in enumerate(ordered)
            ]
    pending = [u for u in sorted(paths) if u not in score_out]

    def reject(audio_id: str, reason: str) -> None:
        failed.setdefault(audio_id, reason)

    def unreadable(audio_id: str, exc: BaseException) -> None:
        reject(audio_id, f"resampled audio unreadable: {getattr(exc, 'reason', exc)}")

    batch: list[_Pending] = []
    inferred = 0

    def keep(item: _Pending, results: list) -> None:
        audio_id, channel = item.unit
        if item.turns is None:
            (result,) = results
            score_out[item.unit] = score_rows(audio_id, date, model.model_id, result.scores, channel=channel)
            emb_out[item.unit] = np.asarray(result.embedding, dtype=np.float32)
            seg_out[item.unit] = [
                segment_row(audio_id, date, model.model_id, seg.start_s, seg.end_s, seg.scores, channel=channel, turn=i)
                for i, seg in enumerate(result.segments)
            ]
            return
        weights = [t.end - t.start for t in item.turns]
        scores = weighted_mean([r.scores for r in results], weights)
        score_out[item.unit] = score_rows(audio_id, date, model.model_id, scores, channel=channel)
        emb_out[item.unit] = np.asarray(weighted_mean([r.embedding for r in results], weights), dtype=np.float32)
        seg_out[item.unit] = [
            segment_row(
                audio_id,
                date,
                model.model_id,
                t.start / SAMPLE_RATE,
                t.end / SAMPLE_RATE,
                r.scores,
                channel=channel,
                turn=i,
                speech_share=float(t.speech_share),
            )
            for i, (t, r) in enumerate(zip(item.turns, results, strict=True))
        ]

    def score_one(item: _Pending) -> list | None:
        audio_id = item.unit[0]
        try:
            return model.score(item.clips)
        except AudioReadError as exc:
            unreadable(audio_id, exc)
        except MachineFault:
            raise  # the disk or the object store failed, not the recording: the step fails
        except (OSError, MemoryError) as exc:
            if is_machine_fault(exc):
                raise machine_fault(exc, "scoring", paths[item.unit]) from exc
            reject(audio_id, f"inference failed: {type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a quarantine row
            reject(audio_id, f"inference failed: {type(exc).__name__}: {exc}")
        return None

    def flush() -> None:
        nonlocal inferred
        if not batch:
            return
        inferred += len(batch)
        try:
            flat = model.score([clip for item in batch for clip in item.clips])
            results, at = [], 0
            for item in batch:
                results.append(flat[at : at + len(item.clips)])
                at += len(item.clips)
        except Exception:
            # One bad recording must not take its batch with it: retry one by one.
            results = [score_one(item) for item in batch]
        for item, result in zip(batch, results, strict=True):
            if result is not None:
                keep(item, result)
        batch.clear()

    def clips_of(unit: Unit, reader: AudioReader) -> _Pending | None:
        # too short for the model says more than "no speech": checked first under either setting
        reason = too_short(reader.num_samples, model.min_samples)
        if reason is not None:
            reject(unit[0], reason)
            return None
        if find_turns is None:
            return _Pending(unit, [reader], None)
        turns = [t for t in find_turns(reader) if too_short(t.end - t.start, model.min_samples) is None]
        if not turns:
            silent.add(unit)
            return None
        return _Pending(unit, [SpanReader(reader, t.start, t.end) for t in turns], turns)

    for n, unit in enumerate(pending, start=1):
        try:
            reader = open_audio(paths[unit])
            item = clips_of(unit, reader)
        except (ValueError, OSError, MemoryError) as exc:
            if is_machine_fault(exc):  # our own FLAC unreadable for the machine's reasons: fail, blame no file
                raise machine_fault(exc, "reading the 16 kHz FLAC", paths[unit]) from exc
            unreadable(unit[0], exc)
        else:
            if item is not None:
                batch.append(item)
                if len(batch) >= batch_size:
                    flush()
        if progress is not None:
            progress(n, len(pending))
    flush()

    # A recording is scored when a channel of it holds speech and none of its channels failed.
    heard = {a for a, _ in score_out}
    for audio_id in sorted({a for a, _ in silent} - heard):
        reject(audio_id, schemas.NO_SPEECH)
    units = sorted(u for u in score_out if u[0] not in failed)
    without_speech = sum(1 for u in silent if u[0] in heard and u[0] not in failed)
    rejects = [(src, audio_id, reason) for audio_id, reason in failed.items() for src in sources.get(audio_id, [])]
    emb_schema = schemas.emotion_embeddings_schema(model.embed_dim)
    embeddings_table = pa.table(
        {
            "audio_id": pa.array([a for a, _ in units], pa.string()),
            "date": pa.array([date] * len(units), pa.date32()),
            "model_id": pa.array([model.model_id] * len(units), pa.string()),
            "channel": pa.array([c for _, c in units], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(
                    np.concatenate([emb_out[u] for u in units]) if units else np.zeros(0, np.float32), pa.float32()
                ),
                model.embed_dim,
            ),
        },
        schema=emb_schema,
    )
    return ScoringOutput(
        scores=pa.Table.from_pylist([score_out[u] for u in units], schema=schemas.EMOTION_SCORES),
        embeddings=embeddings_table,
        segments=pa.Table.from_pylist(
            [row for u in units for row in sorted(seg_out.get(u, []), key=lambda r: r["start_s"])],
            schema=schemas.EMOTION_SEGMENTS,
        ),
        rejects=reject_rows(day, EMOTION_STAGE, rejects),
        reused=len(reusable.keys() & set(units)),
        inferred=inferred,
        without_speech=without_speech,
        repaired=tuple(sorted({a for a, _ in unsound & paths.keys()})),
    )


def frame_batches(
    model: EmotionScorer, resampled: pa.Table, day: str, audio_ids: list[str | Unit], *, open_audio: OpenAudio
) -> Iterator[pa.RecordBatch]:
    """Per-frame embeddings and scores (50 Hz) of ``audio_ids`` (an id alone is its mono channel, or
    ``(audio_id, channel)``), the opt-in frame granularity, over the whole recording (pauses included), as
    ``emotion_frames`` record batches of one window each: written as they come, the day's frames never
    sit in memory together.

    A second pass over the audio (funasr's ``granularity="frame"``), read and run a few windows at a
    time; the model stitches a long recording's windows without duplicate frames.
    """
    date = dt.date.fromisoformat(day)
    paths = _resampled_units(resampled)
    schema = schemas.emotion_frames_schema(model.embed_dim)
    for unit in audio_ids:
        audio_id, channel = (unit, schemas.MONO) if isinstance(unit, str) else unit
        first = 0
        for chunk in model.frames(open_audio(paths[(audio_id, channel)])):
            n = len(chunk.times_s)
            best = chunk.scores.argmax(axis=1)
            columns = {
                "audio_id": pa.array([audio_id] * n, pa.string()),
                "date": pa.array([date] * n, pa.date32()),
                "model_id": pa.array([model.model_id] * n, pa.string()),
                "channel": pa.array([channel] * n, pa.string()),
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
