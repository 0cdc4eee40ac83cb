"""A day's embeddings and scores as files for notebooks: .npy (+ index), Parquet or CSV.

``export_day(lake_dir, day, out_dir, fmt)`` writes, for the recordings that have both an embedding
and scores on ``day`` (sorted by audio_id, one row each):

- ``npy``: ``emotion_embeddings_<day>.npy`` float32 (N, D), ``emotion_scores_<day>.npy`` float32
  (N, 9) in EMOTION_LABELS order, and ``index_<day>.csv`` whose row i names row i of both arrays
  (audio_id, date, model_id, emotion, confidence);
- ``parquet``: ``emotion_<day>.parquet``, the scores' columns plus ``embedding`` (fixed-size list);
- ``csv``: ``emotion_<day>.csv``, the scores' columns plus ``e0 .. e{D-1}``.

No dagster here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emo_assets.lib.files.atomic import atomic_write
from emo_assets.lib.schemas import EMOTION_LABELS, MONO
from emo_assets.lib.store import lake

FORMATS = ("npy", "parquet", "csv")
INDEX_COLUMNS = ("audio_id", "date", "model_id", "channel", "emotion", "confidence")


class ExportError(ValueError):
    pass


def day_rows(lake_dir: Path, day: str) -> tuple[pa.Table, np.ndarray]:
    """The day's scores (sorted by audio_id, then channel) and their embeddings [N, D], row for row:
    one row per recording and channel (a two-channel call has one per side)."""
    scores = lake.read_partition(lake_dir, "emotion_scores", day)
    embeddings = lake.read_partition(lake_dir, "emotion_embeddings", day)
    if scores is None or embeddings is None:
        raise ExportError(
            f"no emotion_scores/emotion_embeddings for {day} under {lake_dir}: run `emo run --date {day}` first"
        )
    scores, embeddings = _with_channel(scores), _with_channel(embeddings)
    position = {key: i for i, key in enumerate(_keys(embeddings))}
    scores = scores.filter(pa.array([key in position for key in _keys(scores)], pa.bool_()))
    scores = scores.sort_by([("audio_id", "ascending"), ("channel", "ascending")])
    matrix = lake.embedding_matrix(embeddings)
    rows = np.array([position[key] for key in _keys(scores)], dtype=np.int64)
    return scores, matrix[rows] if rows.size else np.zeros((0, matrix.shape[1]), np.float32)


def _with_channel(rows: pa.Table) -> pa.Table:
    """Rows written before channels existed are mono."""
    if "channel" in rows.column_names:
        filled = pc.fill_null(rows.column("channel"), MONO)
        return rows.set_column(rows.column_names.index("channel"), "channel", filled)
    return rows.append_column("channel", pa.array([MONO] * rows.num_rows, pa.string()))


def _keys(rows: pa.Table) -> list[tuple[str, str]]:
    return list(zip(rows.column("audio_id").to_pylist(), rows.column("channel").to_pylist()))


def export_day(lake_dir: Path, day: str, out_dir: Path, fmt: str) -> list[Path]:
    """Write the day's embeddings and scores in ``fmt``; returns the files written."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    scores, matrix = day_rows(lake_dir, day)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    score_matrix = (
        np.column_stack([scores.column(c).to_numpy().astype(np.float32) for c in EMOTION_LABELS])
        if scores.num_rows
        else np.zeros((0, len(EMOTION_LABELS)), np.float32)
    )
    if fmt == "npy":
        emb_path = out_dir / f"emotion_embeddings_{day}.npy"
        scores_path = out_dir / f"emotion_scores_{day}.npy"
        index_path = out_dir / f"index_{day}.csv"
        with atomic_write(emb_path) as f:
            np.save(f, matrix.astype(np.float32))
        with atomic_write(scores_path) as f:
            np.save(f, score_matrix)
        with atomic_write(index_path) as f:
            _write_csv(f, scores.select(list(INDEX_COLUMNS)))
        return [emb_path, scores_path, index_path]
    if fmt == "parquet":
        path = out_dir / f"emotion_{day}.parquet"
        column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), matrix.shape[1])
        with atomic_write(path) as f:
            pq.write_table(scores.append_column("embedding", column), f)
        return [path]
    path = out_dir / f"emotion_{day}.csv"
    wide = scores
    for j in range(matrix.shape[1]):
        wide = wide.append_column(f"e{j}", pa.array(matrix[:, j], pa.float32()))
    with atomic_write(path) as f:
        _write_csv(f, wide)
    return [path]


def _write_csv(f, table: pa.Table) -> None:
    import io

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(table.column_names)
    columns = [table.column(c).to_pylist() for c in table.column_names]
    for row in zip(*columns):
        writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
    f.write(text.getvalue().encode("utf-8"))
