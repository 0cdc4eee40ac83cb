"""One recording -> the emotion2vec+ WebUI's outputs: result.json, embedding.npy, processed_audio.wav.

People who used the WebUI image of emotion2vec+ expect a folder per run,
``outputs_YYYYMMDD_HHMMSS/``, holding::

    result.json          emotion, confidence, the 9 scores by name, granularity, model_id, ...
    embedding.npy        float32, (1, D) for granularity "utterance", (frames, D) for "frame"
    processed_audio.wav  the 16 kHz mono audio the model heard, bit for bit (16-bit PCM)

With several files, the folder holds one subfolder per file. A file becomes samples through
:func:`emo_assets.lib.audio.load.load_mono_16k`, the function the pipeline's FLAC is made with, and the
model hears them exactly as ``processed_audio.wav`` stores them; so ``embedding.npy`` is the lake's
embedding of the same file, and funasr on ``processed_audio.wav`` reproduces it. Scores come from the model the pipeline's
``emotion_scores`` uses (an ``EmotionScorer``, ``lib/model/scorer.py``), windowed the same way; the frame
embedding is its ``infer_frames`` (50 frames per second). With ``turns`` (the default; EMO_SEGMENTS or
``--segments turns``) the recording is cut into speech turns as the pipeline cuts it
(:mod:`emo_assets.lib.audio.turns`): each turn is scored as a clip, result.json lists them, the scores
and the utterance embedding are their duration-weighted mean, and a file with no speech is refused.
No dagster here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emo_assets.lib.analytics.arc import Turn, voice_arc
from emo_assets.lib.audio.load import as_stored, load_mono_16k, write_wav_atomic
from emo_assets.lib.files.atomic import atomic_write
from emo_assets.lib.model.scorer import ArrayReader, EmotionResult, SpanReader
from emo_assets.lib.model.windows import too_short, weighted_mean
from emo_assets.lib.schemas import EMOTION_LABELS, NO_SPEECH, SAMPLE_RATE

GRANULARITIES = ("utterance", "frame")
FRAME_RATE_HZ = 50
EMOJI = {
    "angry": "😠",
    "disgusted": "🤢",
    "fearful": "😨",
    "happy": "😊",
    "neutral": "😐",
    "other": "🤔",
    "sad": "😢",
    "surprised": "😲",
    "unknown": "❓",
}
RESULT_JSON = "result.json"
EMBEDDING_NPY = "embedding.npy"
PROCESSED_WAV = "processed_audio.wav"


class AnalyzeError(ValueError):
    """A recording that could not be analysed; the message names the file and the remedy."""


class NoSpeechError(AnalyzeError):
    """Speech turns were asked for and the voice-activity model found none: nothing to score."""


@dataclass(frozen=True)
class Analysis:
    """The model's view of one recording, as the WebUI shows it."""

    audio_name: str
    duration_s: float
    emotion: str
    confidence: float
    scores: dict[str, float]  # the 9 classes, in EMOTION_LABELS order
    embedding: np.ndarray  # float32 (1, D) or (frames, D)
    granularity: str
    model_id: str
    random_weights: bool | None  # None: not known (a result read back from the lake)
    timestamp: str  # ISO 8601, UTC
    precision: str | None = None  # fp32 or int8, as set for the model; None: not known (read from the lake)
    segments: tuple = ()  # the model's windows (scorer.Segment), the emotion timeline of a long recording
    turns: tuple = ()  # with speech turns: one dict per turn (turn, start_s, end_s, speech_share, emotion, ...)

    def arc_turns(self) -> list[Turn]:
        """The recording's timeline as the emotion arc reads it: its speech turns, else the model's windows."""
        if self.turns:
            return [
                Turn(t["turn"], t["start_s"], t["end_s"], tuple(t["scores"][e] for e in EMOTION_LABELS))
                for t in self.turns
            ]
        return [Turn(i, s.start_s, s.end_s, tuple(float(v) for v in s.scores)) for i, s in enumerate(self.segments)]

    def result(self, with_embedding: bool = True) -> dict:
        """The content of result.json."""
        out = {
            "audio_name": self.audio_name,
            "duration_s": round(self.duration_s, 3),
            "emotion": self.emotion,
            "emoji": EMOJI[self.emotion],
            "confidence": self.confidence,
            "scores": dict(self.scores),
            "granularity": self.granularity,
            "model_id": self.model_id,
            "random_weights": self.random_weights,
            "precision": self.precision,
            "timestamp": self.timestamp,
            "sample_rate_hz": SAMPLE_RATE,
        }
        if self.turns:
            out["segments"] = "turns"
            out["turns"] = [dict(t) for t in self.turns]
        arc = voice_arc(self.arc_turns())
        if arc is not None:  # its emotion arc, as call_emotion_arc has it (one turn or window is an arc too)
            out["arc"] = dataclasses.asdict(arc)
        if with_embedding:
            out["embedding_file"] = EMBEDDING_NPY
            out["embedding_shape"] = list(self.embedding.shape)
            if self.granularity == "frame":
                out["frame_rate_hz"] = FRAME_RATE_HZ
        return out


def analyze_waveform(
    model,
    wav: np.ndarray,
    audio_name: str,
    granularity: str = "utterance",
    now: dt.datetime | None = None,
    precision: str | None = None,
    turns: bool = False,
) -> Analysis:
    """Score one 16 kHz mono waveform with ``model`` (an EmotionScorer), as a 16-bit file stores it.

    ``wav`` is quantised with :func:`~emo_assets.lib.audio.load.as_stored` first (a no-op on samples from
    ``load_mono_16k``), so the model hears what :func:`write_analysis` writes to processed_audio.wav.
    ``precision`` is the model's setting, recorded in result.json.
    """
    wav = as_stored(wav)
    if granularity not in GRANULARITIES:
        raise AnalyzeError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    reason = too_short(len(wav), model.min_samples)
    if reason is not None:
        raise AnalyzeError(f"{audio_name}: {reason}")
    turn_rows: tuple = ()
    if turns:
        result, turn_rows = _score_turns(model, wav, audio_name)
    else:
        result = model.infer([wav])[0]
    if granularity == "frame":
        embedding = np.asarray(model.infer_frames(wav).embeddings, dtype=np.float32)
    else:
        embedding = np.asarray(result.embedding, dtype=np.float32).reshape(1, -1)
    now = now or dt.datetime.now(dt.UTC)
    return Analysis(
        audio_name=audio_name,
        duration_s=len(wav) / SAMPLE_RATE,
        emotion=result.emotion,
        confidence=result.confidence,
        scores={label: float(s) for label, s in zip(EMOTION_LABELS, result.scores)},
        embedding=embedding,
        granularity=granularity,
        model_id=model.model_id,
        random_weights=bool(model.is_random),
        timestamp=now.isoformat(timespec="seconds"),
        precision=precision,
        segments=tuple(result.segments),
        turns=turn_rows,
    )


def _score_turns(model, wav: np.ndarray, audio_name: str) -> tuple[EmotionResult, tuple[dict, ...]]:
    """The recording's speech turns, each scored as a clip, and their duration-weighted mean."""
    from emo_assets.lib.audio.turns import find_turns

    reader = ArrayReader(wav)
    found = [t for t in find_turns(reader) if too_short(t.end - t.start, model.min_samples) is None]
    if not found:
        raise NoSpeechError(f"{audio_name}: {NO_SPEECH}")
    results = model.score([SpanReader(reader, t.start, t.end) for t in found])
    weights = [t.end - t.start for t in found]
    rows = tuple(
        {
            "turn": i,
            "start_s": round(t.start_s, 3),
            "end_s": round(t.end_s, 3),
            "speech_share": round(t.speech_share, 3),
            "emotion": r.emotion,
            "confidence": r.confidence,
            "scores": {label: float(v) for label, v in zip(EMOTION_LABELS, r.scores)},
        }
        for i, (t, r) in enumerate(zip(found, results, strict=True))
    )
    mean = EmotionResult(
        embedding=weighted_mean([r.embedding for r in results], weights),
        scores=weighted_mean([r.scores for r in results], weights),
    )
    return mean, rows


def write_analysis(analysis: Analysis, wav: np.ndarray | None, folder: Path, with_embedding: bool = True) -> Path:
    """Write result.json, embedding.npy (unless ``with_embedding`` is False) and processed_audio.wav
    (unless ``wav`` is None): 16-bit PCM holding exactly the samples :func:`analyze_waveform` scored."""
    folder.mkdir(parents=True, exist_ok=True)
    if wav is not None:
        write_wav_atomic(folder / PROCESSED_WAV, wav)
    if with_embedding:
        with atomic_write(folder / EMBEDDING_NPY) as f:
            np.save(f, analysis.embedding)
    text = json.dumps(analysis.result(with_embedding), indent=2, ensure_ascii=False) + "\n"
    with atomic_write(folder / RESULT_JSON) as f:
        f.write(text.encode("utf-8"))
    return folder


def run_folder(out_root: Path, now: dt.datetime) -> Path:
    """A new ``outputs_YYYYMMDD_HHMMSS`` folder under ``out_root`` (suffixed ``_2``, ... if taken)."""
    base = f"outputs_{now.strftime('%Y%m%d_%H%M%S')}"
    out_root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = out_root / (base if n == 1 else f"{base}_{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise AnalyzeError(f"{out_root}: too many output folders named {base}_*; remove some")


def analyze_files(
    model,
    paths: list[Path],
    out_root: Path,
    granularity: str = "utterance",
    with_embedding: bool = True,
    now: dt.datetime | None = None,
    precision: str | None = None,
    turns: bool = False,
    channels=None,
) -> tuple[Path, list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """Analyse ``paths`` into one new run folder. Returns (run folder, [(file, its folder)], [(file, error)]).

    One file writes straight into the run folder; several get one subfolder each, named after the
    file (``call_1``, ``call_1_2`` for a second file of the same name). With ``channels`` (a
    :class:`~emo_assets.lib.audio.channels.ChannelLayout`), each side of a two-channel file whose
    sides differ is analysed on its own, into a subfolder named after its channel (``agent/``,
    ``customer/``); other files as without it.
    """
    now = now or dt.datetime.now(dt.UTC)
    run = run_folder(Path(out_root), now.astimezone())
    done: list[tuple[Path, Path]] = []
    failed: list[tuple[Path, str]] = []
    used: set[str] = set()
    for path in paths:
        path = Path(path)
        folder = run if len(paths) == 1 else run / _unique(_safe_name(path.stem), used)
        try:
            voices = _voices(path, channels)
            results = []
            for channel, wav in voices:
                name = path.name if channel is None else f"{path.name} [{channel}]"
                analysis = analyze_waveform(model, wav, name, granularity, now, precision, turns=turns)
                results.append((analysis, wav, folder if channel is None else folder / channel))
        except (OSError, ValueError) as exc:  # AudioDecodeError and AnalyzeError are ValueErrors
            failed.append((path, str(exc)))
            continue
        for analysis, wav, where in results:
            done.append((path, write_analysis(analysis, wav, where, with_embedding)))
    if not done:
        run.rmdir()
    return run, done, failed


def _voices(path: Path, layout) -> list[tuple[str | None, np.ndarray]]:
    """(channel or None, 16 kHz samples as stored) per voice of the file: its sides when ``layout``
    applies (two channels that differ), else the downmix."""
    if layout is not None:
        from emo_assets.lib.audio.channels import sides_identical
        from emo_assets.lib.audio.decode_stream import open_stream
        from emo_assets.lib.audio.load import probe_audio, stream_mono_16k

        if probe_audio(path).channels == 2 and not sides_identical(open_stream(path)):
            return [(name, np.concatenate(list(stream_mono_16k(path, channel=i)))) for i, name in layout.channels()]
    return [(None, load_mono_16k(path))]


def _safe_name(stem: str) -> str:
    return re.sub(r"[^\w.-]+", "_", stem).strip("._") or "audio"


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate
