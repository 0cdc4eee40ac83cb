"""similar_audio / similar_embedding: known neighbours, the one-row-per-recording rule, numpy agreement."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from emo_assets.cli import main
from emo_assets.lib import schemas
from emo_assets.lib.analytics import nearest, similarity
from emo_assets.lib.store import lake, warehouse
from tests.helpers import numpy_top_k


def _embeddings(rows: list[tuple[str, str, str, list[float]]]) -> pa.Table:
    width = len(rows[0][3])
    return pa.table(
        {
            "audio_id": [r[0] for r in rows],
            "date": pa.array([dt.date.fromisoformat(r[1]) for r in rows], pa.date32()),
            "model_id": [r[2] for r in rows],
            "channel": ["mono"] * len(rows),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.asarray([r[3] for r in rows], np.float32).reshape(-1)), width
            ),
        },
        schema=schemas.emotion_embeddings_schema(width),
    )


def _con(table: pa.Table) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("incoming", table)
    con.execute("CREATE TABLE emotion_embeddings AS SELECT * FROM incoming")
    similarity.create_similarity_macros(con)
    return con


KNOWN = [
    ("a", "2026-11-01", "m", [1.0, 0.0, 0.0]),
    ("b", "2026-11-01", "m", [0.9, 0.1, 0.0]),
    ("c", "2026-11-01", "m", [0.0, 1.0, 0.0]),
    ("d", "2026-11-01", "m", [-1.0, 0.0, 0.0]),
    ("b", "2026-11-03", "m", [0.9, 0.1, 0.0]),  # the same recording landed again
    ("e", "2026-11-02", "other-model", [1.0, 0.0, 0.0]),  # another model's space
]


def test_nearest_neighbours_of_known_vectors():
    con = _con(_embeddings(KNOWN))
    got = similarity.similar_to_audio(con, "a", 5)
    assert [(n.rank, n.audio_id) for n in got] == [(1, "b"), (2, "c"), (3, "d")]
    assert [n.similarity for n in got] == pytest.approx([0.9 / np.hypot(0.9, 0.1), 0.0, -1.0], abs=1e-6)
    assert got[0].date == dt.date(2026, 11, 3)  # one row per recording: its newest day
    assert {n.model_id for n in got} == {"m"}  # "e" is another model's vector, never compared
    assert [n.audio_id for n in similarity.similar_to_audio(con, "a", 1)] == ["b"]


def test_date_from_and_unknown_audio_id():
    con = _con(_embeddings(KNOWN))
    assert [n.audio_id for n in similarity.similar_to_audio(con, "a", 5, date_from="2026-11-02")] == ["b"]
    with pytest.raises(duckdb.InvalidInputException, match="no recording with audio_id 'nope' has an embedding"):
        similarity.similar_to_audio(con, "nope", 5)
    with pytest.raises(duckdb.InvalidInputException, match="audio_id 'not-an-id'"):  # plain SQL, as in the README
        con.execute("SELECT * FROM similar_audio('not-an-id', 3)").fetchall()
    rows = con.execute("SELECT audio_id FROM similar_audio('c', 2)").fetchall()  # plain SQL, as analysts call it
    assert rows == [("b",), ("a",)]


def test_similar_embedding_takes_a_vector_and_checks_its_width():
    con = _con(_embeddings(KNOWN))
    got = similarity.similar_to_vector(con, np.array([0.0, 1.0, 0.1]), 2, model_id="m")
    assert [n.audio_id for n in got] == ["c", "b"]
    anywhere = similarity.similar_to_vector(con, np.array([1.0, 0.0, 0.0]), 3)
    assert [n.audio_id for n in anywhere][:2] == ["a", "e"]
    with pytest.raises(ValueError, match="3-wide"):
        similarity.similar_to_vector(con, np.ones(4), 2)


@pytest.mark.parametrize("width", [1, 7, 64])
def test_agrees_with_numpy_brute_force(width):
    rng = np.random.default_rng(width)
    x = rng.standard_normal((200, width)).astype(np.float32)
    con = _con(_embeddings([(f"r{i:03d}", "2026-11-01", "m", x[i].tolist()) for i in range(200)]))
    got = similarity.similar_to_audio(con, "r000", 10)
    idx, sims = numpy_top_k(x[1:], x[0], 10)
    if width == 1:  # 1-d cosine is +-1: compare the similarities, the ties' order is by audio_id
        assert [n.similarity for n in got] == pytest.approx(sims.tolist(), abs=1e-5)
    else:
        assert [n.audio_id for n in got] == [f"r{i + 1:03d}" for i in idx]
        assert [n.similarity for n in got] == pytest.approx(sims.tolist(), abs=1e-5)


def test_macros_exist_before_any_embeddings(tmp_path):
    con = duckdb.connect()
    warehouse.refresh_lake_views(con, tmp_path / "lake")
    similarity.create_similarity_macros(con)
    with pytest.raises(duckdb.InvalidInputException, match="audio_id 'x'"):
        con.execute("SELECT * FROM similar_audio('x', 5)").fetchall()
    assert con.execute("SELECT * FROM similar_embedding([1.0, 2.0], 5)").fetchall() == []


def test_warehouse_views_over_the_lake_have_the_macros(tmp_path):
    lake_dir = tmp_path / "lake"
    rows = [
        (f"r{i}", day, "m", v)
        for i, (day, v) in enumerate(
            [("2026-11-01", [1, 0, 0, 0, 0]), ("2026-11-01", [1, 1, 0, 0, 0]), ("2026-11-02", [0, 0, 1, 0, 0])]
        )
    ]
    table = _embeddings(rows)
    for day in ("2026-11-01", "2026-11-02"):
        lake.write_partition(
            lake_dir,
            "emotion_embeddings",
            day,
            table.filter(pa.compute.equal(table.column("date"), dt.date.fromisoformat(day))),
        )
    with warehouse.connect(tmp_path / "warehouse.duckdb") as con:
        warehouse.refresh_lake_views(con, lake_dir)
        similarity.create_similarity_macros(con)
    with warehouse.connect(tmp_path / "warehouse.duckdb", read_only=True) as con:
        got = con.execute("SELECT audio_id, similarity FROM similar_audio('r0', 5)").fetchall()
    assert [g[0] for g in got] == ["r1", "r2"]
    assert [g[1] for g in got] == pytest.approx([1 / np.sqrt(2), 0.0], abs=1e-6)


def test_emo_similar_by_audio_id_and_by_file(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from emo_assets.lib.audio.load import load_mono_16k
    from emo_assets.lib.audio.sample_day import write_encoded
    from emo_assets.resources import EmotionModelResource

    monkeypatch.setenv("EMO_SEGMENTS", "windows")  # noise, embedded whole as the lake rows below are
    model = EmotionModelResource(model=str(tiny_model_dir), device="cpu", segments="windows").load()
    rng = np.random.default_rng(5)
    files = [
        write_encoded(
            tmp_path / f"raw/rec_{i}.wav", (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000, "wav_pcm_16"
        )
        for i in range(4)
    ]
    results = model.infer([load_mono_16k(f) for f in files])
    ids = [f"id{i}" for i in range(4)]
    lake.write_partition(
        tmp_path / "lake",
        "emotion_embeddings",
        "2026-11-20",
        _embeddings([(ids[i], "2026-11-20", model.model_id, r.embedding.tolist()) for i, r in enumerate(results)]),
    )
    nearest.index_day(tmp_path / "lake", tmp_path / "similarity", "2026-11-20")  # what similarity_index does

    capsys.readouterr()  # what loading the model printed
    assert main(["similar", "id0", "-k", "2", "--json", "--data-dir", str(tmp_path)]) == 0
    got = json.loads(capsys.readouterr().out)
    emb = np.stack([r.embedding for r in results])
    idx, sims = numpy_top_k(emb[1:], emb[0], 2)
    assert [g["audio_id"] for g in got] == [ids[i + 1] for i in idx]
    assert [g["similarity"] for g in got] == pytest.approx(sims.tolist(), abs=1e-5)

    code = main(
        [
            "similar",
            str(files[2]),
            "-k",
            "1",
            "--json",
            "--data-dir",
            str(tmp_path),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    got = json.loads(capsys.readouterr().out)  # the random-weights note goes to stderr
    assert got[0]["audio_id"] == "id2" and got[0]["similarity"] == pytest.approx(1.0, abs=1e-5)

    assert main(["similar", "no-such-id", "--data-dir", str(tmp_path)]) == 2


def test_a_known_recording_alone_in_the_warehouse_has_no_neighbours_and_no_error():
    con = _con(_embeddings([("a", "2026-11-01", "m", [1.0, 0.0, 0.0])]))
    assert similarity.similar_to_audio(con, "a", 3) == []
