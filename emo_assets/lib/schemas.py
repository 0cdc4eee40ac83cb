"""Every table of the platform: its schema, natural key, home and meaning, in :data:`TABLES`.

The meaning of each column (and of the warehouse's macros, :data:`MACROS`) lives here too: the
warehouse writes it as DuckDB comments (``warehouse.apply_comments``) and the assets publish it as
their Dagster column schema.

One name per thing: a table's name is its asset key, its lake folder (``lake/<name>/``) or its
DuckDB table, and its entry here. Nothing else keeps a list of tables; the warehouse views, the
SQL models' lineage and the tests derive theirs from :data:`TABLES`.

The embedding width depends on the model (1024 for large, 768 for base), so the schemas holding
an embedding are built for a given width; DuckDB reads a fixed-size list as ``FLOAT[D]``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

# The one sample rate of the platform: audio/ writes it, model/ reads it.
SAMPLE_RATE = 16_000

EMOTION_LABELS = (
    "angry",
    "disgusted",
    "fearful",
    "happy",
    "neutral",
    "other",
    "sad",
    "surprised",
    "unknown",
)

AUDIO_FILES = pa.schema(
    [
        ("audio_id", pa.string()),
        ("source_path", pa.string()),
        ("size_bytes", pa.int64()),
        ("format", pa.string()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("duration_s", pa.float64()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("date", pa.date32()),
    ]
)

RESAMPLED_AUDIO = pa.schema(
    [
        ("audio_id", pa.string()),
        ("channel", pa.string()),
        ("path", pa.string()),
        ("duration_s", pa.float64()),
        ("rms_dbfs", pa.float64()),
        ("is_silent", pa.bool_()),
        ("date", pa.date32()),
    ]
)

_SCORE_FIELDS = [(label, pa.float32()) for label in EMOTION_LABELS]

EMOTION_SCORES = pa.schema(
    [
        ("audio_id", pa.string()),
        ("date", pa.date32()),
        ("model_id", pa.string()),
        ("channel", pa.string()),
        ("emotion", pa.string()),
        ("confidence", pa.float32()),
        *_SCORE_FIELDS,
    ]
)

EMOTION_SEGMENTS = pa.schema(
    [
        ("audio_id", pa.string()),
        ("date", pa.date32()),
        ("model_id", pa.string()),
        ("channel", pa.string()),
        ("turn", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("speech_share", pa.float32()),
        ("emotion", pa.string()),
        ("confidence", pa.float32()),
        *_SCORE_FIELDS,
    ]
)

# One row per recording, day, model and channel: how that voice's emotion moved over its turns
# (lib/analytics/arc.py holds the definitions).
CALL_EMOTION_ARC = pa.schema(
    [
        ("audio_id", pa.string()),
        ("date", pa.date32()),
        ("model_id", pa.string()),
        ("channel", pa.string()),
        ("turns", pa.int32()),
        ("duration_s", pa.float64()),
        ("start_emotion", pa.string()),
        ("start_negativity", pa.float32()),
        ("end_emotion", pa.string()),
        ("end_negativity", pa.float32()),
        ("peak_turn", pa.int32()),
        ("peak_start_s", pa.float64()),
        ("peak_end_s", pa.float64()),
        ("peak_emotion", pa.string()),
        ("peak_negativity", pa.float32()),
        ("ended_calmer", pa.bool_()),
        ("recovered", pa.bool_()),
        ("recovery_turn", pa.int32()),
        ("recovery_s", pa.float64()),
    ]
)

QUARANTINE = pa.schema(
    [
        ("source_path", pa.string()),
        ("audio_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("date", pa.date32()),
    ]
)

# A run's record of the files it left for the next run because they were still being written
# (lib/audio/settle.py); kept beside the lake tables, not one of them.
DEFERRED = pa.schema(
    [
        ("source_path", pa.string()),
        ("size_bytes", pa.int64()),
        ("modified_at", pa.timestamp("us", tz="UTC")),
        ("reason", pa.string()),
        ("date", pa.date32()),
    ]
)


EMOTION_CLUSTERS = pa.schema(
    [
        ("audio_id", pa.string()),
        ("date", pa.date32()),
        ("cluster_id", pa.int32()),
        ("pca_x", pa.float32()),
        ("pca_y", pa.float32()),
        ("distance", pa.float32()),
        ("model_version", pa.string()),
    ]
)

SATISFACTION_PREDICTIONS = pa.schema(
    [
        ("audio_id", pa.string()),
        ("date", pa.date32()),
        ("label", pa.string()),
        ("probability", pa.float32()),
        ("source", pa.string()),
        ("model_version", pa.string()),
    ]
)


# What each column means, its unit and range: one dict per table, applied as DuckDB comments
# (``COMMENT ON COLUMN``, warehouse.apply_comments) and shown as the asset's column schema in
# Dagster. Columns shared by several tables are described once here.
_AUDIO_ID = "sha256 of the file's bytes (64 hex characters): the recording's identity across days and paths"
_DATE = "the day (partition) the file landed under `data/raw/<day>/`"
_MODEL_ID = "the emotion2vec+ model that scored the recording (its model id as resolved at load)"
_SCORES = {label: f"score of the class '{label}', 0..1; the nine class scores sum to 1" for label in EMOTION_LABELS}
_TOP = {
    "emotion": "the top class: the label with the highest score, one of the nine classes",
    "confidence": "score of the top class, 0..1",
}
_CHANNEL = (
    "whose voice the row is: 'mono' for a recording scored as one voice (mono, or stereo with identical "
    "channels, or no channel config); with a channel config (channels.toml, README 'Two-channel calls') "
    "the configured name of the channel, e.g. 'agent' or 'customer' (or 'left'/'right'); NULL in rows "
    "written before channels existed, which are mono"
)
_EMBEDDING = "emotion2vec+ embedding, FLOAT[D] (D = 1024 for the large model, 768 for base); compare by cosine"

_COLUMNS: dict[str, dict[str, str]] = {
    "audio_files": {
        "audio_id": _AUDIO_ID,
        "source_path": "path of the file as it landed, under `data/raw/<day>/`",
        "size_bytes": "file size in bytes",
        "format": "container format as read by the audio decoder (wav, flac, mp3, ...)",
        "sample_rate": "sample rate of the original file, in Hz",
        "channels": "number of channels of the original file",
        "duration_s": "duration of the original file, in seconds",
        "ingested_at": "when the file was registered, UTC",
        "date": _DATE,
    },
    "resampled_audio": {
        "audio_id": _AUDIO_ID,
        "channel": _CHANNEL,
        "path": (
            "the 16 kHz mono FLAC, relative to the data directory: the downmix for 'mono' "
            "(`resampled/date=YYYY-MM-DD/<audio_id>.flac`), the channel's own samples otherwise "
            "(`resampled/date=YYYY-MM-DD/<audio_id>.<channel>.flac`); relative to EMO_LAKE_URI when the lake "
            "is in an object store (`_resampled/date=YYYY-MM-DD/<audio_id>.flac` or `<audio_id>.<channel>.flac`)"
        ),
        "duration_s": "duration of the resampled audio, in seconds",
        "rms_dbfs": "loudness: RMS level in dBFS, -120..0 (-120 for digital silence)",
        "is_silent": "true when rms_dbfs is below -60 dBFS; silent audio is still scored",
        "date": _DATE,
    },
    "emotion_embeddings": {
        "audio_id": _AUDIO_ID,
        "date": _DATE,
        "model_id": _MODEL_ID,
        "channel": _CHANNEL,
        "embedding": _EMBEDDING + "; the mean of the final frame features over the recording's speech "
        "(turns weighted by duration; with fixed windows, over the whole recording)",
    },
    "emotion_scores": {
        "audio_id": _AUDIO_ID,
        "date": _DATE,
        "model_id": _MODEL_ID,
        "channel": _CHANNEL,
        **_TOP,
        **_SCORES,
    },
    "emotion_segments": {
        "audio_id": _AUDIO_ID,
        "date": _DATE,
        "model_id": _MODEL_ID,
        "channel": _CHANNEL,
        "turn": "index of the row within the recording's channel, from 0 in time order: a speech turn found "
        "by the voice-activity model (EMO_SEGMENTS=turns), or a fixed window (EMO_SEGMENTS=windows); "
        "NULL in rows written before turns existed",
        "start_s": "start of the turn (or window) within the recording, in seconds",
        "end_s": "end of the turn (or window) within the recording, in seconds",
        "speech_share": "share of the turn the voice-activity model heard as speech, 0..1 (a turn keeps short "
        "pauses); NULL for fixed windows and for rows written before turns existed",
        **_TOP,
        **_SCORES,
    },
    "emotion_frames": {
        "audio_id": _AUDIO_ID,
        "date": _DATE,
        "model_id": _MODEL_ID,
        "channel": _CHANNEL,
        "frame": "frame number within the recording, from 0; one frame per 20 ms (50 Hz)",
        "start_s": "start of the frame within the recording, in seconds (frame / 50)",
        **_TOP,
        **_SCORES,
        "embedding": _EMBEDDING + "; the frame's own features",
    },
    "call_emotion_arc": {
        "audio_id": _AUDIO_ID,
        "date": _DATE,
        "model_id": _MODEL_ID,
        "channel": "whose voice the arc follows: 'mono' for a recording scored as one voice, else the "
        "configured channel name ('agent', 'customer', ...)",
        "turns": "number of turns (rows of emotion_segments) of the voice, >= 1",
        "duration_s": "from the start of the first turn to the end of the last, in seconds",
        "start_emotion": "top emotion of the first turn",
        "start_negativity": "negativity of the first turn: angry + disgusted + fearful + sad scores, 0..1",
        "end_emotion": "top emotion of the last turn",
        "end_negativity": "negativity of the last turn, 0..1",
        "peak_turn": "turn number of the most negative turn (highest negativity; the earliest of equals)",
        "peak_start_s": "start of the most negative turn within the recording, in seconds",
        "peak_end_s": "end of the most negative turn within the recording, in seconds",
        "peak_emotion": "top emotion of the most negative turn",
        "peak_negativity": "negativity of the most negative turn, 0..1",
        "ended_calmer": "true when the last turn's negativity is below the first's; NULL for a single turn",
        "recovered": "when the most negative turn is negative (negativity above 0.5, whatever its top emotion): "
        "true if a later turn is calm (neutral + happy above 0.5); NULL when no turn is negative",
        "recovery_turn": "turn number of the first calm turn (neutral + happy above 0.5) after the most negative "
        "one; NULL if none",
        "recovery_s": "seconds from the start of the most negative turn to the start of that calm turn; NULL if none",
    },
    "quarantine": {
        "source_path": "path of the refused file, under `data/raw/<day>/`",
        "audio_id": _AUDIO_ID + "; NULL when the file could not be read",
        "stage": "the stage that refused the file, named after the table it could not enter: "
        "audio_files, resampled_audio or emotion_scores (which also refuses a recording with no speech)",
        "reason": "why the stage refused the file, in words",
        "date": _DATE,
    },
    "embedding_index": {
        "audio_id": _AUDIO_ID,
        "date": _DATE,
        "model_id": _MODEL_ID,
        "channel": _CHANNEL,
        "embedding": _EMBEDDING + "; a copy of emotion_embeddings.embedding in DuckDB's storage",
    },
    "emotion_clusters": {
        "audio_id": _AUDIO_ID,
        "date": _DATE,
        "cluster_id": "cluster of the recording's embedding under model_version, 0..k-1; "
        "ids of two model versions are unrelated",
        "pca_x": "first coordinate of the embedding's 2-D PCA projection (unitless, for plotting)",
        "pca_y": "second coordinate of the embedding's 2-D PCA projection (unitless, for plotting)",
        "distance": "Euclidean distance from the normalised embedding to its cluster's centroid, >= 0",
        "model_version": "version of the fitted cluster model that assigned the row",
    },
    "satisfaction_predictions": {
        "audio_id": _AUDIO_ID,
        "date": _DATE,
        "label": "predicted satisfaction: 'satisfied' or 'dissatisfied'",
        "probability": "probability of the predicted label, 0.5..1",
        "source": "what made the prediction: 'model' (the fitted classifier) or 'rule:emotion_valence' (no fitted model)",
        "model_version": "version of the fitted satisfaction model that predicted the row",
    },
}

# The warehouse's table macros (lib/analytics/similarity.py), applied as COMMENT ON MACRO TABLE.
MACROS: dict[str, str] = {
    "similar_audio": "similar_audio(aid, k, date_from := NULL): the k recordings whose embeddings are closest "
    "(cosine) to recording aid's, same model_id, aid itself left out, one row per recording; columns rank, "
    "audio_id, date, model_id, similarity (-1..1); an unknown aid raises an error",
    "similar_embedding": "similar_embedding(vec, k, model := NULL, date_from := NULL): the k recordings whose "
    "embeddings are closest (cosine) to the vector vec (width D); columns rank, audio_id, date, model_id, "
    "similarity (-1..1)",
}


def emotion_frames_schema(embed_dim: int) -> pa.Schema:
    """Per-frame (50 Hz) results, written only when frame granularity is switched on."""
    return pa.schema(
        [
            ("audio_id", pa.string()),
            ("date", pa.date32()),
            ("model_id", pa.string()),
            ("channel", pa.string()),
            ("frame", pa.int32()),
            ("start_s", pa.float64()),
            ("emotion", pa.string()),
            ("confidence", pa.float32()),
            *_SCORE_FIELDS,
            ("embedding", pa.list_(pa.float32(), embed_dim)),
        ]
    )


def emotion_embeddings_schema(embed_dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("audio_id", pa.string()),
            ("date", pa.date32()),
            ("model_id", pa.string()),
            ("channel", pa.string()),
            ("embedding", pa.list_(pa.float32(), embed_dim)),
        ]
    )


@dataclass(frozen=True)
class Table:
    """One table: where it lives, what identifies a row, what it means, its columns.

    ``home`` is ``lake`` (Parquet, one file per day, a view in DuckDB) or ``warehouse`` (a DuckDB
    table, replaced day by day). The table's name is also its asset key. ``schema_for_width``
    builds the schema of a table holding an embedding, whose width is the model's. ``opt_in``
    tables exist only when a setting switches them on. ``columns`` describes every column:
    meaning, unit, range.
    """

    name: str
    home: Literal["lake", "warehouse"]
    key: tuple[str, ...]
    description: str
    schema: pa.Schema | None = None
    schema_for_width: Callable[[int], pa.Schema] | None = None
    opt_in: bool = False
    columns: dict[str, str] = field(default_factory=dict)

    def arrow_schema(self, embed_dim: int | None = None) -> pa.Schema | None:
        """The table's schema; for an embedding table, None until the width is known."""
        if self.schema_for_width is None:
            return self.schema
        return None if embed_dim is None else self.schema_for_width(embed_dim)


_REGISTRY = (
    Table(
        "audio_files",
        "lake",
        ("source_path",),
        "one row per file that landed under `data/raw/<day>/` and could be read",
        schema=AUDIO_FILES,
        columns=_COLUMNS["audio_files"],
    ),
    Table(
        "resampled_audio",
        "lake",
        ("audio_id", "date", "channel"),
        "one row per distinct recording of the day and channel, as 16 kHz mono FLAC",
        schema=RESAMPLED_AUDIO,
        columns=_COLUMNS["resampled_audio"],
    ),
    Table(
        "emotion_embeddings",
        "lake",
        ("audio_id", "date", "model_id", "channel"),
        "the emotion2vec+ embedding of each recording and channel (mean of the final frame features over its speech)",
        schema_for_width=emotion_embeddings_schema,
        columns=_COLUMNS["emotion_embeddings"],
    ),
    Table(
        "emotion_scores",
        "lake",
        ("audio_id", "date", "model_id", "channel"),
        "the 9-class emotion scores of each recording and channel (duration-weighted mean over its speech "
        "turns), its top class and confidence",
        schema=EMOTION_SCORES,
        columns=_COLUMNS["emotion_scores"],
    ),
    Table(
        "emotion_segments",
        "lake",
        ("audio_id", "date", "model_id", "channel", "start_s"),
        "the emotion timeline: one row per speech turn (or fixed window, EMO_SEGMENTS=windows) of each "
        "recording and channel",
        schema=EMOTION_SEGMENTS,
        columns=_COLUMNS["emotion_segments"],
    ),
    Table(
        "emotion_frames",
        "lake",
        ("audio_id", "date", "model_id", "channel", "frame"),
        "per-frame (50 Hz) scores and embeddings; written only with EMO_FRAMES on (frame_granularity in "
        "the emotion_model resource), so the UI shows it Missing otherwise",
        schema_for_width=emotion_frames_schema,
        opt_in=True,
        columns=_COLUMNS["emotion_frames"],
    ),
    Table(
        "call_emotion_arc",
        "lake",
        ("audio_id", "date", "model_id", "channel"),
        "the emotion arc of each recording and channel: start and end emotion, the most negative turn "
        "and when, whether it ended calmer, the time to recover",
        schema=CALL_EMOTION_ARC,
        columns=_COLUMNS["call_emotion_arc"],
    ),
    Table(
        "quarantine",
        "lake",
        ("source_path", "stage"),
        "every file of the day a stage could not process, with the stage and the reason",
        schema=QUARANTINE,
        columns=_COLUMNS["quarantine"],
    ),
    Table(
        "embedding_index",
        "warehouse",
        ("audio_id", "date", "model_id", "channel"),
        "the lake's embeddings copied into DuckDB's storage for similarity search: one row per recording, "
        "the customer's side of a two-channel call (the agent's side is in emotion_embeddings only)",
        schema_for_width=emotion_embeddings_schema,
        columns=_COLUMNS["embedding_index"],
    ),
    Table(
        "emotion_clusters",
        "warehouse",
        ("audio_id", "date"),
        "each recording of the day assigned to the current cluster model, with its PCA position",
        schema=EMOTION_CLUSTERS,
        columns=_COLUMNS["emotion_clusters"],
    ),
    Table(
        "satisfaction_predictions",
        "warehouse",
        ("audio_id", "date"),
        "satisfied or dissatisfied per recording, from the fitted model or the valence rule",
        schema=SATISFACTION_PREDICTIONS,
        columns=_COLUMNS["satisfaction_predictions"],
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in _REGISTRY}
LAKE_TABLES: tuple[str, ...] = tuple(t.name for t in _REGISTRY if t.home == "lake")
WAREHOUSE_TABLES: tuple[str, ...] = tuple(t.name for t in _REGISTRY if t.home == "warehouse")


class Stage(enum.StrEnum):
    """A stage that refuses files (``quarantine.stage``): named after the table it could not
    get the file into."""

    AUDIO_FILES = "audio_files"
    RESAMPLED_AUDIO = "resampled_audio"
    EMOTION_SCORES = "emotion_scores"


# The channel of a recording scored as one voice, and the channels whose voice stands for the
# recording where one row per recording is wanted (satisfaction: the customer's, else the mono one).
MONO = "mono"
CUSTOMER = "customer"

# Why emotion_scores refuses a recording the voice-activity model heard no speech in: silence and
# noise are not emotions (README "Speech turns").
NO_SPEECH = "no speech: the voice-activity model found no speech turn in the recording"


@dataclass(frozen=True)
class StageOutput:
    """What a stage made of a day: the rows it produced and the files it quarantined."""

    rows: pa.Table
    rejects: pa.Table
    deferred: pa.Table | None = None  # files still being written, left for the next run (audio_files only)


def reject_rows(day: str, stage: Stage, rejects: list[tuple[str, str | None, str]]) -> pa.Table:
    """Quarantine rows from (source_path, audio_id or None, reason) triples."""
    stage = Stage(stage).value
    date = dt.date.fromisoformat(day)
    return pa.Table.from_pylist(
        [
            {"source_path": src, "audio_id": audio_id, "stage": stage, "reason": reason, "date": date}
            for src, audio_id, reason in sorted(rejects, key=lambda r: r[0])
        ],
        schema=QUARANTINE,
    )
