"""Nearest recordings through the approximate index (``ann.py``): what `emo similar`, the web page and
Python callers use. The SQL macros ``similar_audio`` / ``similar_embedding`` (similarity.py) stay the
exact reference.

    from emo_assets.lib.analytics import nearest
    nearest.similar_to_audio(con, data_dir / "similarity", "<audio_id>", k=5)
    nearest.similar_to_vector(data_dir / "similarity", vector, k=5, model_id="...")

Results follow the macros' rules: one row per recording (its newest day), the query recording left
out, only embeddings of one ``model_id``; ``similarity`` is the cosine from the index (8-bit codes once
the model has ``train_min`` vectors, exact before). No dagster here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.compute as pc

from emo_assets.lib.analytics import ann
from emo_assets.lib.analytics.similarity import Neighbour
from emo_assets.lib.store import lake
from emo_assets.lib.store.warehouse import EMBEDDING_INDEX, embedding_width

EMBEDDINGS = "emotion_embeddings"


@dataclass(frozen=True)
class DayIndexed:
    day: str
    rows_by_model: dict[str, int]
    removed_from: list[str]  # models that held this day before and no longer do
    trained_now: list[str]


def index_day(lake_dir: Path, index_root: Path, day: str, settings: ann.AnnSettings | None = None) -> DayIndexed:
    """Make every model's index hold exactly the day's ``emotion_embeddings`` partition.

    Each model_id of the day gets the day's rows (replacing what it held for the day); a model that
    held the day but has no rows in it any more (the day was re-run with another model) loses the day.
    """
    table = lake.voice_rows(lake.read_partition(lake_dir, EMBEDDINGS, day))  # one vector per recording
    if table is None:
        raise ann.AnnError(f"no {EMBEDDINGS} for {day} under {lake_dir}: materialize {EMBEDDINGS} for this day first")
    rows, trained = {}, []
    for model_id in sorted(table.column("model_id").unique().to_pylist()):
        part = table.filter(pc.equal(table.column("model_id"), model_id))
        written = ann.write_day(
            index_root, model_id, day, part.column("audio_id").to_pylist(), lake.embedding_matrix(part), settings
        )
        rows[model_id] = written.rows
        if written.trained_now:
            trained.append(model_id)
    removed = [m for m in ann.indexed_models(index_root) if m not in rows and ann.remove_day(index_root, m, day)]
    return DayIndexed(day, rows, removed, trained)


# Loaded indexes, kept while their files are unchanged (the web server searches many times).
_loaded: dict[tuple[str, str], tuple[tuple, ann.AnnIndex]] = {}
_lock = threading.Lock()


def _files_state(root: Path, model_id: str) -> tuple:
    folder = ann.model_dir(root, model_id)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return tuple((str(p), s.st_mtime_ns, s.st_size) for p in files for s in [p.stat()])


def load(index_root: Path, model_id: str) -> ann.AnnIndex:
    """``model_id``'s index, from memory when its files have not changed since the last load."""
    key = (str(index_root), model_id)
    with _lock:
        state = _files_state(Path(index_root), model_id)
        cached = _loaded.get(key)
        if cached is not None and cached[0] == state:
            return cached[1]
        index = ann.load_index(Path(index_root), model_id)
        _loaded[key] = (state, index)
        return index


def _neighbours(hits: list[ann.Hit], model_id: str) -> list[Neighbour]:
    return [Neighbour(i + 1, h.audio_id, h.date, model_id, h.similarity) for i, h in enumerate(hits)]


def similar_to_vector(
    index_root: Path,
    vector: np.ndarray,
    k: int = 5,
    model_id: str | None = None,
    date_from: str | None = None,
) -> list[Neighbour]:
    """The ``k`` recordings nearest to an embedding ``vector`` among ``model_id``'s (default: the only model)."""
    if model_id is None:
        models = ann.indexed_models(index_root)
        if len(models) != 1:
            raise ann.NoIndexError(
                f"name the model to search: {index_root} holds {len(models)} indexed models ({', '.join(models)})"
                if models
                else f"no similarity index under {index_root}: materialize the similarity_index asset first"
            )
        model_id = models[0]
    hits = load(index_root, model_id).search(vector, k, date_from=date_from)
    return _neighbours(hits, model_id)


def query_embedding(con: duckdb.DuckDBPyConnection, audio_id: str) -> tuple[np.ndarray, str]:
    """The embedding and model_id of ``audio_id`` (its newest day) in the warehouse or lake views."""
    table = EMBEDDING_INDEX if embedding_width(con, EMBEDDING_INDEX) else EMBEDDINGS
    if embedding_width(con, table) is None:
        raise ann.AnnError(f"unknown audio_id {audio_id!r}: the warehouse holds no embeddings yet")
    row = con.execute(
        f'SELECT embedding, model_id FROM "{table}" WHERE audio_id = ? ORDER BY date DESC LIMIT 1', [audio_id]
    ).fetchone()
    if row is None:
        raise ann.AnnError(f"unknown audio_id {audio_id!r}: no recording with this id has an embedding")
    return np.asarray(row[0], dtype=np.float32), row[1]


def similar_to_audio(
    con: duckdb.DuckDBPyConnection, index_root: Path, audio_id: str, k: int = 5, date_from: str | None = None
) -> list[Neighbour]:
    """The ``k`` recordings nearest to ``audio_id``, among embeddings of its model, itself left out."""
    vector, model_id = query_embedding(con, audio_id)
    hits = load(index_root, model_id).search(vector, k, date_from=date_from, exclude=audio_id)
    return _neighbours(hits, model_id)
