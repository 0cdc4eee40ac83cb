"""Every table of the platform: its schema, natural key, home and meaning, in :data:`TABLES`.

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
from dataclasses import dataclass
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
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("emotion", pa.string()),
        ("confidence", pa.float32()),
        *_SCORE_FIELDS,
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


def emotion_frames_schema(embed_dim: int) -> pa.Schema:
    """Per-frame (50 Hz) results, written only when frame granularity is switched on."""
    return pa.schema(
        [
            ("audio_id", pa.string()),
            ("date", pa.date32()),
            ("model_id", pa.string()),
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
            ("embedding", pa.list_(pa.float32(), embed_dim)),
        ]
    )


@dataclass(frozen=True)
class Table:
    """One table: where it lives, what identifies a row, what it means, its columns.

    ``home`` is ``lake`` (Parquet, one file per day, a view in DuckDB) or ``warehouse`` (a DuckDB
    table, replaced day by day). The table's name is also its asset key. ``schema_for_width``
    builds the schema of a table holding an embedding, whose width is the model's. ``opt_in``
    tables exist only when a setting switches them on.
    """

    name: str
    home: Literal["lake", "warehouse"]
    key: tuple[str, ...]
    description: str
    schema: pa.Schema | None = None
    schema_for_width: Callable[[int], pa.Schema] | None = None
    opt_in: bool = False

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
        "one row per file that landed under data/raw/<day>/ and could be read",
        schema=AUDIO_FILES,
    ),
    Table(
        "resampled_audio",
        "lake",
        ("audio_id", "date"),
        "one row per distinct recording of the day, as 16 kHz mono FLAC",
        schema=RESAMPLED_AUDIO,
    ),
    Table(
        "emotion_embeddings",
        "lake",
        ("audio_id", "date", "model_id"),
        "the emotion2vec+ embedding of each recording (mean of the final frame features)",
        schema_for_width=emotion_embeddings_schema,
    ),
    Table(
        "emotion_scores",
        "lake",
        ("audio_id", "date", "model_id"),
        "the 9-class emotion scores of each recording, its top class and confidence",
        schema=EMOTION_SCORES,
    ),
    Table(
        "emotion_segments",
        "lake",
        ("audio_id", "date", "model_id", "start_s"),
        "the emotion timeline: one row per window of each recording",
        schema=EMOTION_SEGMENTS,
    ),
    Table(
        "emotion_frames",
        "lake",
        ("audio_id", "date", "model_id", "frame"),
        "per-frame (50 Hz) scores and embeddings; written only with frame granularity on",
        schema_for_width=emotion_frames_schema,
        opt_in=True,
    ),
    Table(
        "quarantine",
        "lake",
        ("source_path", "stage"),
        "every file of the day a stage could not process, with the stage and the reason",
        schema=QUARANTINE,
    ),
    Table(
        "embedding_index",
        "warehouse",
        ("audio_id", "date", "model_id"),
        "the lake's embeddings copied into DuckDB's storage for similarity search",
        schema_for_width=emotion_embeddings_schema,
    ),
    Table(
        "emotion_clusters",
        "warehouse",
        ("audio_id", "date"),
        "each recording of the day assigned to the current cluster model, with its PCA position",
        schema=EMOTION_CLUSTERS,
    ),
    Table(
        "satisfaction_predictions",
        "warehouse",
        ("audio_id", "date"),
        "satisfied or dissatisfied per recording, from the fitted model or the valence rule",
        schema=SATISFACTION_PREDICTIONS,
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
