"""Nearest recordings by cosine similarity of their emotion2vec+ embeddings, inside DuckDB.

Two table macros live in the warehouse (created by :func:`create_similarity_macros`)::

    SELECT * FROM similar_audio('<audio_id>', 5);                      -- neighbours of a recording
    SELECT * FROM similar_audio('<audio_id>', 5, date_from := DATE '2026-11-01');
    SELECT * FROM similar_embedding([0.1, ...], 5);                    -- neighbours of a vector

Both return ``rank, audio_id, date, model_id, similarity`` (cosine, -1..1), best first.

What they do, exactly:
- one row per recording: the same audio_id (same bytes) may have landed on several days; it is
  listed once, with its newest day on or after ``date_from``;
- ``similar_audio`` leaves the query recording itself out, takes the query's embedding from its
  newest day, and compares only with embeddings of the same ``model_id`` (vectors of two models
  live in different spaces); an audio_id with no embedding is an error (DuckDB's ``error()``, raised
  as ``duckdb.InvalidInputException`` naming the id), never an empty answer;
- ``similar_embedding`` compares with every recording of ``model_id`` (default: any model); the
  vector must have the embeddings' width D, or DuckDB refuses the cast to ``FLOAT[D]``.

They use DuckDB's own ``array_cosine_similarity`` over the ``FLOAT[D]`` column: no extension, no
index, an exact scan (see BENCHMARKS.md for its speed against numpy). No dagster here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from emo_assets.lib.store.warehouse import (
    EMBEDDING_INDEX,
    apply_comments,
    embedding_width,
    open_read_copy,
    read_copy_path,
    refresh_lake_views,
)

# One row per recording (its newest day among the candidates), then the k most similar. A hash
# aggregate: a window (row_number() OVER (PARTITION BY audio_id ...)) costs several times the scan.
_RANKED = """
    ranked AS (
        SELECT audio_id, max(date) AS date, arg_max(model_id, date) AS model_id,
               arg_max(similarity, date) AS similarity
        FROM scored
        GROUP BY audio_id
    )
    SELECT CAST(row_number() OVER (ORDER BY similarity DESC, audio_id) AS INTEGER) AS rank,
           audio_id, date, model_id, similarity
    FROM (SELECT * FROM ranked ORDER BY similarity DESC, audio_id LIMIT k)
    ORDER BY rank
"""

_SIMILAR_AUDIO = (
    """
CREATE OR REPLACE MACRO similar_audio(aid, k, date_from := NULL) AS TABLE
    -- Exactly one row: the query's embedding, or DuckDB's error() naming the unknown id (which would
    -- otherwise give zero rows, indistinguishable from "no neighbours").
    WITH query AS (
        SELECT q.embedding, q.model_id
        FROM (SELECT 1) AS one
        LEFT JOIN (
            SELECT embedding, model_id FROM {source} WHERE audio_id = aid ORDER BY date DESC LIMIT 1
        ) AS q ON true
        WHERE CASE WHEN q.model_id IS NULL THEN error(
            'similar_audio: no recording with audio_id ''' || aid || ''' has an embedding in this warehouse. '
            || 'An audio_id is the sha256 of the file''s bytes: find one with '
            || 'SELECT audio_id, source_path FROM audio_files; or search by vector with similar_embedding(...)'
        ) ELSE true END
    ),
    -- Every candidate is scored first, in a MATERIALIZED CTE the optimizer cannot push a filter into:
    -- `model_id = (subquery)` at the scan becomes a join that copies every FLOAT[D] (2-3x slower).
    all_scored AS MATERIALIZED (
        SELECT audio_id, date, model_id,
               array_cosine_similarity(embedding, (SELECT embedding FROM query)) AS similarity
        FROM {source}
        WHERE audio_id <> aid AND (date_from IS NULL OR date >= CAST(date_from AS DATE))
    ),
    scored AS (
        SELECT * FROM all_scored WHERE model_id = (SELECT model_id FROM query)
    ),
"""
    + _RANKED
)

_SIMILAR_EMBEDDING = (
    """
CREATE OR REPLACE MACRO similar_embedding(vec, k, model := NULL, date_from := NULL) AS TABLE
    WITH scored AS (
        SELECT audio_id, date, model_id,
               {similarity} AS similarity
        FROM {source}
        WHERE (model IS NULL OR model_id = model)
          AND (date_from IS NULL OR date >= CAST(date_from AS DATE))
    ),
"""
    + _RANKED
)

# Stands in for emotion_embeddings before any day has embeddings: the macros exist; similar_embedding
# returns nothing and similar_audio reports that the id has no embedding.
_NO_EMBEDDINGS = (
    "(SELECT CAST(NULL AS VARCHAR) AS audio_id, CAST(NULL AS DATE) AS date, "
    "CAST(NULL AS VARCHAR) AS model_id, CAST(NULL AS FLOAT[1]) AS embedding WHERE false)"
)


@dataclass(frozen=True)
class Neighbour:
    rank: int
    audio_id: str
    date: object  # datetime.date
    model_id: str
    similarity: float


def create_similarity_macros(con: duckdb.DuckDBPyConnection, table: str | None = None) -> None:
    """(Re)create ``similar_audio`` and ``similar_embedding`` over ``table`` (any FLOAT[D]).

    By default over the embedding index table where it exists (a scan of DuckDB's own storage,
    ~6x faster than decoding the Parquet behind the view), else the ``emotion_embeddings`` view.
    Without either yet, the macros are created over an empty relation (similar_audio then reports
    every id as unknown).
    """
    if table is None:
        table = EMBEDDING_INDEX if embedding_width(con, EMBEDDING_INDEX) else "emotion_embeddings"
    width = embedding_width(con, table)
    source = f'"{table}"' if width is not None else _NO_EMBEDDINGS
    con.execute(_SIMILAR_AUDIO.format(source=source))
    similarity = (
        f"array_cosine_similarity(embedding, CAST(vec AS FLOAT[{width}]))"
        if width is not None
        else "CAST(NULL AS FLOAT)"
    )
    con.execute(_SIMILAR_EMBEDDING.format(source=source, similarity=similarity))


def search_connection(warehouse_path: Path, lake_dir: Path) -> duckdb.DuckDBPyConnection:
    """A connection to search from that never locks the pipeline's warehouse: the analysts' read copy
    when there is one (its embedding index table makes a search a scan of DuckDB's own storage),
    else an in-memory DuckDB with the lake views and these macros."""
    copy = read_copy_path(Path(warehouse_path))
    if copy.exists():
        return open_read_copy(copy.parent)
    con = duckdb.connect()
    refresh_lake_views(con, Path(lake_dir))
    create_similarity_macros(con)
    apply_comments(con)
    return con


def similar_to_audio(
    con: duckdb.DuckDBPyConnection, audio_id: str, k: int = 5, date_from: str | None = None
) -> list[Neighbour]:
    """The ``k`` recordings nearest to ``audio_id`` (see the module doc for the rules)."""
    rows = con.execute("SELECT * FROM similar_audio(?, ?, date_from := ?)", [audio_id, k, date_from]).fetchall()
    return [Neighbour(*row) for row in rows]


def similar_to_vector(
    con: duckdb.DuckDBPyConnection,
    vector: np.ndarray,
    k: int = 5,
    model_id: str | None = None,
    date_from: str | None = None,
) -> list[Neighbour]:
    """The ``k`` recordings nearest to an embedding ``vector`` [D]."""
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    width = embedding_width(con)
    if width is not None and vec.size != width:
        raise ValueError(
            f"the query embedding has {vec.size} values but the warehouse holds {width}-wide embeddings; "
            "embed the file with the model that wrote the warehouse (EMO_MODEL / --model)"
        )
    rows = con.execute(
        "SELECT * FROM similar_embedding(?, ?, model := ?, date_from := ?)",
        [vec.tolist(), k, model_id, date_from],
    ).fetchall()
    return [Neighbour(*row) for row in rows]


def describe(con: duckdb.DuckDBPyConnection, neighbours: list[Neighbour]) -> list[dict]:
    """Neighbours with their emotion, confidence and one source_path, for people to read."""
    out = []
    for n in neighbours:
        row = con.execute(
            """
            SELECT (SELECT min(source_path) FROM audio_files WHERE audio_id = $id AND date = $date),
                   (SELECT any_value(emotion) FROM emotion_scores
                    WHERE audio_id = $id AND date = $date AND model_id = $model),
                   (SELECT any_value(confidence) FROM emotion_scores
                    WHERE audio_id = $id AND date = $date AND model_id = $model)
            """,
            {"id": n.audio_id, "date": n.date, "model": n.model_id},
        ).fetchone()
        source_path, emotion, confidence = row if row else (None, None, None)
        out.append(
            {
                "rank": n.rank,
                "audio_id": n.audio_id,
                "date": str(n.date),
                "model_id": n.model_id,
                "similarity": float(n.similarity),
                "source_path": source_path,
                "emotion": emotion,
                "confidence": None if confidence is None else float(confidence),
            }
        )
    return out
