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
from emo_assets.lib.model.score_rows import score_rows, segment_row, unsound_mask
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
    return {(a, c or schemas.MONO) for a, c, b in zip(ids, channels, unsound_mask(rows)) if b}


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


@dataclass(frozen=True)
class Voice:
    """One voice ready for the model: its clips (the whole recording, or one per speech turn)."""

    unit: Unit
    path: str
    clips: Sequence[AudioReader]
    turns: Sequence[SpeechTurn] | None  # None: fixed windows


def unreadable_reason(exc: BaseException) -> str:
    """The quarantine reason of a 16 kHz FLAC that could not be read."""
    return f"resampled audio unreadable: {getattr(exc, 'reason', exc)}"


def read_voice(
    unit: Unit, path: str, *, open_audio: OpenAudio, min_samples: int, find_turns: FindTurns | None
) -> Voice | str | None:
    """The voice of ``path`` ready for the model; or a quarantine reason (a str: unreadable, too
    short); or None when ``find_turns`` found no speech turn long enough to score (silent).

    With ``find_turns``, each turn becomes a clip of its own; without it, the whole recording is one.
    The machine's faults (disk, memory) raise MachineFault: they are not the recording's.
    """
    try:
        reader = open_audio(path)
        # too short for the model says more than "no speech": checked first under either setting
        reason = too_short(reader.num_samples, min_samples)
        if reason is not None:
            return reason
        if find_turns is None:
            return Voice(unit, path, [reader], None)
        turns = [t for t in find_turns(reader) if too_short(t.end - t.start, min_samples) is None]
    except (ValueError, OSError, MemoryError) as exc:
        if is_machine_fault(exc):  # our own FLAC unreadable for the machine's reasons: fail, blame no file
            raise machine_fault(exc, "reading the 16 kHz FLAC", path) from exc
        return unreadable_reason(exc)
    if not turns:
        return None
    return Voice(unit, path, [SpanReader(reader, t.start, t.end) for t in turns], turns)


def _score_one(model: EmotionScorer, voice: Voice) -> list | str:
    try:
        return model.score(voice.clips)
    except AudioReadError as exc:
        return unreadable_reason(exc)
    except MachineFault:
        raise  # the disk or the object store failed, not the recording: the step fails
    except (OSError, MemoryError) as exc:
        if is_machine_fault(exc):
            raise machine_fault(exc, "scoring", voice.path) from exc
        return f"inference failed: {type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - every failure becomes a quarantine row
        return f"inference failed: {type(exc).__name__}: {exc}"


def score_batch(model: EmotionScorer, batch: Sequence[Voice]) -> list[list | str]:
    """One model call for the voices of ``batch``: per voice, its results (one per clip) or the
    reason it is quarantined. A batch that fails is scored again voice by voice, so one bad
    recording does not take its batch with it. The machine's faults raise MachineFault."""
    try:
        flat = model.score([clip for voice in batch for clip in voice.clips])
        results, at = [], 0
        for voice in batch:
            results.append(flat[at : at + len(voice.clips)])
            at += len(voice.clips)
        return results
    except Exception:
        return [_score_one(model, voice) for voice in batch]


def _resampled_units(resampled: pa.Table) -> dict[Unit, str]:
    """(audio_id, channel) -> 16 kHz FLAC path; a table written before channels existed is mono."""
    ids = resampled.column("audio_id").to_pylist()
    channels = resampled.column("channel").to_pylist() if "channel" in resampled.column_names else [None] * len(ids)
    return {(a, c or schemas.MONO): p for a, c, p in zip(ids, channels, resampled.column("path").to_pylist())}


class DayScores:
    """One day's scoring, in three steps shared by every way of running the model:
    :func:`plan_day` makes it (what an earlier run already scored is kept, the rest is
    :attr:`pending`); each voice's outcome is recorded as it comes (:meth:`record`, :meth:`reject`,
    :meth:`silent`), in any order; :meth:`assemble` builds the tables, rows in (audio_id, channel)
    order whatever the order the outcomes came in."""

    def __init__(self, model: EmotionScorer, day: str, sources: dict[str, list[str]], paths: dict[Unit, str]) -> None:
        self.model_id, self.embed_dim = model.model_id, model.embed_dim
        self.day, self.date = day, dt.date.fromisoformat(day)
        self.sources, self.paths = sources, paths
        self.pending: list[Unit] = []
        self.reusable: dict[Unit, tuple[dict, np.ndarray, list[dict]]] = {}
        self.unsound: set[Unit] = set()
        self.inferred = 0
        self._scores: dict[Unit, dict] = {}
        self._embeddings: dict[Unit, np.ndarray] = {}
        self._segments: dict[Unit, list[dict]] = {}
        self._failed: dict[str, str] = {}  # audio_id -> why the recording is quarantined
        self._silent: set[Unit] = set()

    def reject(self, audio_id: str, reason: str) -> None:
        self._failed.setdefault(audio_id, reason)

    def silent(self, unit: Unit) -> None:
        self._silent.add(unit)

    def prepared(self, unit: Unit, outcome: Voice | str | None) -> Voice | None:
        """Record what :func:`read_voice` gave; the voice when it is ready for the model."""
        if isinstance(outcome, str):
            self.reject(unit[0], outcome)
            return None
        if outcome is None:
            self.silent(unit)
        return outcome

    def record(self, batch: Sequence[tuple[Unit, Sequence[SpeechTurn] | None]], outcomes: Sequence[list | str]) -> None:
        """The outcomes of one :func:`score_batch` call, for its voices' (unit, turns)."""
        self.inferred += len(batch)
        for (unit, turns), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, str):
                self.reject(unit[0], outcome)
            else:
                self._keep(unit, turns, outcome)

    def _reuse(self, unit: Unit) -> None:
        row, emb, segments = self.reusable[unit]
        self._scores[unit] = {**row, "date": self.date, "channel": unit[1]}
        self._embeddings[unit] = emb
        ordered = sorted(segments, key=lambda r: r["start_s"])
        self._segments[unit] = [
            {**seg, "date": self.date, "channel": unit[1], "turn": i, "speech_share": seg.get("speech_share")}
            for i, seg in enumerate(ordered)
        ]

    def _keep(self, unit: Unit, turns: Sequence[SpeechTurn] | None, results: list) -> None:
        audio_id, channel = unit
        date, model_id = self.date, self.model_id
        if turns is None:
            (result,) = results
            self._scores[unit] = score_rows(audio_id, date, model_id, result.scores, channel=channel)
            self._embeddings[unit] = np.asarray(result.embedding, dtype=np.float32)
            self._segments[unit] = [
                segment_row(audio_id, date, model_id, seg.start_s, seg.end_s, seg.scores, channel=channel, turn=i)
                for i, seg in enumerate(result.segments)
            ]
            return
        weights = [t.end - t.start for t in turns]
        scores = weighted_mean([r.scores for r in results], weights)
        self._scores[unit] = score_rows(audio_id, date, model_id, scores, channel=channel)
        self._embeddings[unit] = np.asarray(weighted_mean([r.embedding for r in results], weights), dtype=np.float32)
        self._segments[unit] = [
            segment_row(
                audio_id,
                date,
                model_id,
                t.start / SAMPLE_RATE,
                t.end / SAMPLE_RATE,
                r.scores,
                channel=channel,
                turn=i,
                speech_share=float(t.speech_share),
            )
            for i, (t, r) in enumerate(zip(turns, results, strict=True))
        ]

    def assemble(self) -> ScoringOutput:
        """The day's tables. A recording is scored when a channel of it holds speech and none of its
        channels failed; one with no speech in any channel is quarantined (``schemas.NO_SPEECH``)."""
        heard = {a for a, _ in self._scores}
        for audio_id in sorted({a for a, _ in self._silent} - heard):
            self.reject(audio_id, schemas.NO_SPEECH)
        failed = self._failed
        units = sorted(u for u in self._scores if u[0] not in failed)
        without_speech = sum(1 for u in self._silent if u[0] in heard and u[0] not in failed)
        rejects = [(src, a, reason) for a, reason in failed.items() for src in self.sources.get(a, [])]
        embeddings = pa.table(
            {
                "audio_id": pa.array([a for a, _ in units], pa.string()),
                "date": pa.array([self.date] * len(units), pa.date32()),
                "model_id": pa.array([self.model_id] * len(units), pa.string()),
                "channel": pa.array([c for _, c in units], pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(
                        np.concatenate([self._embeddings[u] for u in units]) if units else np.zeros(0, np.float32),
                        pa.float32(),
                    ),
                    self.embed_dim,
                ),
            },
            schema=schemas.emotion_embeddings_schema(self.embed_dim),
        )
        return ScoringOutput(
            scores=pa.Table.from_pylist([self._scores[u] for u in units], schema=schemas.EMOTION_SCORES),
            embeddings=embeddings,
            segments=pa.Table.from_pylist(
                [row for u in units for row in sorted(self._segments.get(u, []), key=lambda r: r["start_s"])],
                schema=schemas.EMOTION_SEGMENTS,
            ),
            rejects=reject_rows(self.day, EMOTION_STAGE, rejects),
            reused=len(self.reusable.keys() & set(units)),
            inferred=self.inferred,
            without_speech=without_speech,
            repaired=tuple(sorted({a for a, _ in self.unsound & self.paths.keys()})),
        )


def plan_day(
    resampled: pa.Table,
    audio_files: pa.Table,
    model: EmotionScorer,
    day: str,
    *,
    turns: bool,
    previous_scores: pa.Table | None = None,
    previous_embeddings: pa.Table | None = None,
    previous_segments: pa.Table | None = None,
) -> DayScores:
    """The day's :class:`DayScores` with the results of an earlier run that can be reused kept, and
    every other voice, in (audio_id, channel) order, :attr:`~DayScores.pending`."""
    sources: dict[str, list[str]] = {}
    for audio_id, src in zip(audio_files.column("audio_id").to_pylist(), audio_files.column("source_path").to_pylist()):
        sources.setdefault(audio_id, []).append(src)
    day_scores = DayScores(model, day, sources, _resampled_units(resampled))
    day_scores.reusable, day_scores.unsound = _previous_results(
        model, previous_scores, previous_embeddings, previous_segments, turns=turns
    )
    for unit in sorted(day_scores.paths):
        if unit in day_scores.reusable:
            day_scores._reuse(unit)
        else:
            day_scores.pending.append(unit)
    return day_scores


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
    """Score every resampled recording (each channel of it) of the day with ``model``, in this
    process, ``batch_size`` voices per call (:mod:`emo_assets.lib.model.ray_scoring` runs the same
    steps on a Ray cluster).

    With ``find_turns`` (EMO_SEGMENTS=turns), each voice is cut into its speech turns and each turn
    is scored as a clip of its own (the model windows a turn longer than ``window_s``); the voice's
    scores and embedding are the duration-weighted mean over its turns, silence is never scored,
    and a recording with no speech in any channel is quarantined (``schemas.NO_SPEECH``). Without
    it, the whole recording is scored in fixed windows.

    ``open_audio(path)`` gives the reader of a row of ``resampled``; it and the reader raise
    ValueError or OSError for unreadable audio, which becomes a quarantine row. A recording one of
    whose channels fails is quarantined as a whole: none of its channels is kept.
    """
    day_scores = plan_day(
        resampled,
        audio_files,
        model,
        day,
        turns=find_turns is not None,
        previous_scores=previous_scores,
        previous_embeddings=previous_embeddings,
        previous_segments=previous_segments,
    )
    batch: list[Voice] = []

    def flush() -> None:
        if batch:
            day_scores.record([(v.unit, v.turns) for v in batch], score_batch(model, batch))
            batch.clear()

    pending = day_scores.pending
    for n, unit in enumerate(pending, start=1):
        outcome = read_voice(
            unit, day_scores.paths[unit], open_audio=open_audio, min_samples=model.min_samples, find_turns=find_turns
        )
        voice = day_scores.prepared(unit, outcome)
        if voice is not None:
            batch.append(voice)
            if len(batch) >= batch_size:
                flush()
        if progress is not None:
            progress(n, len(pending))
    flush()
    return day_scores.assemble()


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
