"""nearest.py: the lake's days into each model's index, search by audio_id or vector, clear errors."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from emo_assets.lib import schemas
from emo_assets.lib.analytics import ann, nearest
from emo_assets.lib.store import lake, warehouse


def _write_day(lake_dir, day: str, rows: list[tuple[str, str, list[float]]]) -> None:
    date = dt.date.fromisoformat(day)
    lake.write_partition(
        lake_dir,
        "emotion_embeddings",
        day,
        pa.table(
            {
                "audio_id": [r[0] for r in rows],
                "date": pa.array([date] * len(rows), pa.date32()),
                "model_id": [r[1] for r in rows],
                "channel": ["mono"] * len(rows),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.asarray([r[2] for r in rows], np.float32).reshape(-1)), len(rows[0][2])
                ),
            },
            schema=schemas.emotion_embeddings_schema(len(rows[0][2])),
        ),
    )


def _lake_con(lake_dir) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    warehouse.refresh_lake_views(con, lake_dir)
    return con


def test_search_by_audio_id_and_by_vector(tmp_path):
    lake_dir, root = tmp_path / "lake", tmp_path / "similarity"
    _write_day(lake_dir, "2026-11-01", [("a", "m", [1, 0, 0]), ("b", "m", [1, 1, 0]), ("c", "m", [0, 0, 1])])
    done = nearest.index_day(lake_dir, root, "2026-11-01")
    assert done.rows_by_model == {"m": 3} and done.removed_from == []
    con = _lake_con(lake_dir)
    got = nearest.similar_to_audio(con, root, "a", 5)
    assert [(n.rank, n.audio_id, n.model_id) for n in got] == [(1, "b", "m"), (2, "c", "m")]
    assert [n.similarity for n in got] == pytest.approx([1 / np.sqrt(2), 0.0], abs=1e-6)
    assert [n.audio_id for n in nearest.similar_to_vector(root, np.array([0, 0.1, 1.0]), 1)] == ["c"]

    # a new day shows up in the next search (the cached index is reloaded when its files change)
    _write_day(lake_dir, "2026-11-02", [("d", "m", [0, 0.05, 1])])
    nearest.index_day(lake_dir, root, "2026-11-02")
    assert [n.audio_id for n in nearest.similar_to_vector(root, np.array([0, 0.05, 1.0]), 1)] == ["d"]
    got = nearest.similar_to_vector(root, np.array([0, 0.05, 1.0]), 5, date_from="2026-11-02")
    assert [n.audio_id for n in got] == ["d"]


def test_a_day_rerun_with_another_model_leaves_the_old_models_index(tmp_path):
    lake_dir, root = tmp_path / "lake", tmp_path / "similarity"
    _write_day(lake_dir, "2026-11-01", [("a", "old", [1, 0]), ("b", "old", [0, 1])])
    _write_day(lake_dir, "2026-11-02", [("c", "old", [1, 1])])
    nearest.index_day(lake_dir, root, "2026-11-01")
    nearest.index_day(lake_dir, root, "2026-11-02")
    _write_day(lake_dir, "2026-11-01", [("a", "new", [1, 0, 0])])
    done = nearest.index_day(lake_dir, root, "2026-11-01")
    assert done.removed_from == ["old"]
    assert ann.indexed_days(root, "old") == ["2026-11-02"]
    assert ann.indexed_days(root, "new") == ["2026-11-01"]


def test_unknown_audio_id_missing_index_and_missing_day_are_clear_errors(tmp_path):
    lake_dir, root = tmp_path / "lake", tmp_path / "similarity"
    _write_day(lake_dir, "2026-11-01", [("a", "m", [1, 0]), ("b", "m", [0, 1])])
    con = _lake_con(lake_dir)
    with pytest.raises(ann.NoIndexError, match="no similarity index for model 'm'.*similarity_index"):
        nearest.similar_to_audio(con, root, "a", 1)
    with pytest.raises(ann.NoIndexError, match="no similarity index under"):
        nearest.similar_to_vector(root, np.ones(2), 1)
    with pytest.raises(ann.AnnError, match="no emotion_embeddings for 2026-11-09"):
        nearest.index_day(lake_dir, root, "2026-11-09")
    nearest.index_day(lake_dir, root, "2026-11-01")
    with pytest.raises(ann.AnnError, match="unknown audio_id 'zzz'"):
        nearest.similar_to_audio(con, root, "zzz", 1)
    with pytest.raises(ann.NoIndexError, match="no similarity index for model 'other'"):
        nearest.similar_to_vector(root, np.ones(2), 1, model_id="other")
    _write_day(lake_dir, "2026-11-02", [("c", "m2", [1, 1, 1])])
    nearest.index_day(lake_dir, root, "2026-11-02")
    with pytest.raises(ann.NoIndexError, match="name the model to search"):
        nearest.similar_to_vector(root, np.ones(2), 1)


def test_emo_similar_without_an_index_says_what_to_run(tmp_path, capsys):
    from emo_assets.cli import main

    _write_day(tmp_path / "lake", "2026-11-01", [("a", "m", [1, 0]), ("b", "m", [0, 1])])
    assert main(["similar", "a", "--data-dir", str(tmp_path)]) == 2
    assert "no similarity index for model 'm'" in capsys.readouterr().err
    nearest.index_day(tmp_path / "lake", tmp_path / "similarity", "2026-11-01")
    assert main(["similar", "a", "-k", "1", "--data-dir", str(tmp_path)]) == 0
    assert "b" in capsys.readouterr().out
