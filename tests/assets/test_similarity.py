"""The similarity_index asset on a real tiny day: the index holds the day, agrees with the exact SQL
macro, and a re-run of the day replaces its vectors instead of adding them again."""

import pytest

from emo_assets.lib.analytics import ann, nearest
from emo_assets.lib.store import lake, warehouse
from tests.helpers import DAY, failed_steps, materialize, write_small_day


def test_similarity_index_holds_the_day_and_agrees_with_the_exact_macro(tmp_path, tiny_model_dir):
    write_small_day(tmp_path / "raw" / DAY, n=4)
    result = materialize(tmp_path, tiny_model_dir)
    assert result.success, failed_steps(result)
    meta = result.asset_materializations_for_node("similarity_index")[0].metadata
    embeddings = lake.read_partition(tmp_path / "lake", "emotion_embeddings", DAY)
    model_id = embeddings.column("model_id")[0].as_py()
    assert meta["row_count"].value == embeddings.num_rows == 4
    assert ann.indexed_models(tmp_path / "similarity") == [model_id]
    assert ann.indexed_days(tmp_path / "similarity", model_id) == [DAY]

    con = warehouse.open_read_copy(tmp_path)
    try:
        for audio_id in embeddings.column("audio_id").to_pylist():
            exact = con.execute("SELECT audio_id, similarity FROM similar_audio(?, 3)", [audio_id]).fetchall()
            got = nearest.similar_to_audio(con, tmp_path / "similarity", audio_id, 3)
            assert [n.audio_id for n in got] == [e[0] for e in exact]
            assert [n.similarity for n in got] == pytest.approx([e[1] for e in exact], abs=1e-5)
            assert {n.model_id for n in got} == {model_id}
    finally:
        con.close()

    # the day again: its vectors are replaced, not added a second time
    again = materialize(tmp_path, tiny_model_dir)
    assert again.success, failed_steps(again)
    assert ann.load_index(tmp_path / "similarity", model_id).size == 4
