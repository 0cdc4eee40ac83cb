"""Arrow schemas of the lake tables: one place for every column name and type.

The embedding width depends on the model (1024 for large, 768 for base), so the embeddings
schema is built for a given width; DuckDB reads a fixed-size list as ``FLOAT[D]``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

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
class StageOutput:
    """What a stage made of a day: the rows it produced and the files it quarantined."""

    rows: pa.Table
    rejects: pa.Table


def reject_rows(day: str, stage: str, rejects: list[tuple[str, str | None, str]]) -> pa.Table:
    """Quarantine rows from (source_path, audio_id or None, reason) triples."""
    date = dt.date.fromisoformat(day)
    return pa.Table.from_pylist(
        [
            {"source_path": src, "audio_id": audio_id, "stage": stage, "reason": reason, "date": date}
            for src, audio_id, reason in sorted(rejects, key=lambda r: r[0])
        ],
        schema=QUARANTINE,
    )
