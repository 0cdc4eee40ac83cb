"""The arc and the drift check in the pipeline: a real day scored by the (tiny) model, its arc
table read back, and the drift check run against trailing days that match it and that do not."""

import datetime as dt

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks, monitoring_checks
from emo_assets.lib import schemas
from emo_assets.lib.analytics.arc import arc_rows
from emo_assets.lib.audio.sample_day import synth_speech, write_encoded
from emo_assets.lib.store import lake, warehouse
from emo_assets.resources import EmotionModelResource
from tests.helpers import DAY, failed_steps, publish_run, resources

CHECKS = [*all_checks, *monitoring_checks]


def _resources(data_dir, model_dir) -> dict:
    """The day is cut in fixed 3 s windows (several per recording), on every run of this module."""
    model = EmotionModelResource(model=str(model_dir), device="cpu", window_s=3.0, segments="windows")
    return {**resources(data_dir, model_dir), "emotion_model": model}


def _run(data_dir, model_dir, selection=None):
    return dg.materialize(
        [*all_assets(), *CHECKS],
        partition_key=DAY,
        resources=_resources(data_dir, model_dir),
        selection=selection,
        raise_on_error=False,
    )


def _drift(result) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "emotion_drift"]
    return evaluation


def _copy_to(lake_dir, day: str, table: str, rows: pa.Table) -> None:
    date = pa.array([dt.date.fromisoformat(day)] * rows.num_rows, pa.date32())
    lake.write_partition(lake_dir, table, day, rows.set_column(rows.schema.get_field_index("date"), "date", date))


@pytest.fixture(scope="module")
def scored_day(tmp_path_factory, tiny_model_dir):
    """Two long recordings (several windows each) and a short one, through the whole graph."""
    data_dir = tmp_path_factory.mktemp("arc")
    day_dir = data_dir / "raw" / DAY
    for i, seconds in enumerate([7.0, 9.5, 1.5]):
        samples = synth_speech(seconds, 16000, np.random.default_rng([5, i]))
        write_encoded(day_dir / f"call_{i}.wav", samples, 16000, "wav_pcm_16")
    result = dg.materialize(
        [*all_assets(), *CHECKS],
        partition_key=DAY,
        resources=_resources(data_dir, tiny_model_dir),
        raise_on_error=False,
    )
    assert result.success, failed_steps(result)
    return data_dir, result


def test_arc_table_from_the_days_segments(scored_day):
    data_dir, result = scored_day
    lake_dir = data_dir / "lake"
    segments = lake.read_partition(lake_dir, "emotion_segments", DAY)
    arcs = lake.read_partition(lake_dir, "call_emotion_arc", DAY)
    assert arcs.schema == schemas.CALL_EMOTION_ARC
    assert arcs.num_rows == 3  # one voice per recording: mono
    assert arcs.equals(arc_rows(segments))
    for arc in arcs.to_pylist():
        mine = segments.filter(pc.equal(segments.column("audio_id"), arc["audio_id"])).sort_by("start_s").to_pylist()
        assert arc["turns"] == len(mine)
        assert arc["start_emotion"] == mine[0]["emotion"] and arc["end_emotion"] == mine[-1]["emotion"]
        negativity = [sum(s[e] for e in ("angry", "disgusted", "fearful", "sad")) for s in mine]
        assert arc["peak_negativity"] == pytest.approx(max(negativity), abs=1e-6)
        assert arc["peak_start_s"] == mine[negativity.index(max(negativity))]["start_s"]
        assert arc["duration_s"] == pytest.approx(mine[-1]["end_s"] - mine[0]["start_s"])
    assert sorted(arcs.column("turns").to_pylist())[-1] >= 3  # the 9.5 s call in 3 s windows
    meta = result.asset_materializations_for_node("call_emotion_arc")[0].metadata
    assert meta["row_count"].value == 3
    # in the warehouse as a view over the lake, like every lake table (the analysts' copy, once published)
    publish_run(data_dir)
    con = warehouse.open_read_copy(data_dir)
    try:
        (n,) = con.execute("SELECT count(*) FROM call_emotion_arc WHERE date = ?", [DAY]).fetchone()
    finally:
        con.close()
    assert n == 3


def test_drift_check_passes_without_a_baseline_and_against_a_matching_week(scored_day, tiny_model_dir):
    data_dir, result = scored_day
    first = _drift(result)
    assert first.passed and first.severity == dg.AssetCheckSeverity.WARN
    assert first.metadata["baseline_days"].value == [] and "psi" not in first.metadata
    assert "data:image/png;base64," in first.metadata["last_days_chart"].value

    lake_dir = data_dir / "lake"
    scores = lake.read_partition(lake_dir, "emotion_scores", DAY)
    embeddings = lake.read_partition(lake_dir, "emotion_embeddings", DAY)
    week = [(dt.date.fromisoformat(DAY) - dt.timedelta(days=i)).isoformat() for i in range(1, 8)]
    for day in week:  # the same recordings every day: no drift
        _copy_to(lake_dir, day, "emotion_scores", scores)
        _copy_to(lake_dir, day, "emotion_embeddings", embeddings)
    stable = _drift(_run(data_dir, tiny_model_dir, selection=["emotion_scores"]))
    assert stable.passed
    assert stable.metadata["baseline_days"].value == sorted(week)
    assert stable.metadata["psi"].value == pytest.approx(0.0, abs=1e-9)
    assert stable.metadata["cosine_shift"].value == pytest.approx(0.0, abs=1e-6)
    assert stable.description.startswith("no drift")


def test_drift_check_warns_on_a_day_unlike_its_week(scored_day, tiny_model_dir):
    data_dir, _ = scored_day
    lake_dir = data_dir / "lake"
    scores = lake.read_partition(lake_dir, "emotion_scores", DAY)
    embeddings = lake.read_partition(lake_dir, "emotion_embeddings", DAY)
    # the week before: every recording happy, embeddings pointing the other way
    happy = scores.set_column(
        scores.schema.get_field_index("emotion"), "emotion", pa.array(["happy"] * scores.num_rows)
    )
    if set(scores.column("emotion").to_pylist()) == {"happy"}:
        happy = happy.set_column(
            happy.schema.get_field_index("emotion"), "emotion", pa.array(["sad"] * scores.num_rows)
        )
    flipped = lake.embedding_matrix(embeddings) * -1
    width = flipped.shape[1]
    flipped_rows = embeddings.set_column(
        embeddings.schema.get_field_index("embedding"),
        "embedding",
        pa.FixedSizeListArray.from_arrays(pa.array(flipped.reshape(-1)), width),
    )
    week = [(dt.date.fromisoformat(DAY) - dt.timedelta(days=i)).isoformat() for i in range(1, 8)]
    for day in week:
        _copy_to(lake_dir, day, "emotion_scores", happy)
        _copy_to(lake_dir, day, "emotion_embeddings", flipped_rows)
    result = _run(data_dir, tiny_model_dir, selection=["emotion_scores"])
    assert result.success  # a warning, never a failed run
    drifted = _drift(result)
    assert not drifted.passed and drifted.severity == dg.AssetCheckSeverity.WARN
    assert drifted.metadata["psi"].value > drifted.metadata["psi_warn"].value == 0.2
    assert drifted.metadata["cosine_shift"].value == pytest.approx(2.0, abs=1e-5)
    assert "drift: " in drifted.description and "PSI" in drifted.description
    assert "**yes**" in drifted.metadata["last_days"].value

    # thresholds are the check's config
    lenient = dg.materialize(
        [*all_assets(), *CHECKS],
        partition_key=DAY,
        resources=_resources(data_dir, tiny_model_dir),
        selection=["emotion_scores"],
        run_config={"ops": {"emotion_scores_emotion_drift": {"config": {"psi_warn": 1e9, "cosine_warn": 2.5}}}},
    )
    assert _drift(lenient).passed


def test_emo_run_says_a_drift_warning_and_still_succeeds(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from emo_assets.cli import main
    from tests.helpers import write_small_day

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    write_small_day(tmp_path / "raw" / DAY)
    argv = ["run", "--date", DAY, "--data-dir", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(argv) == 0
    assert "emotion_drift" not in capsys.readouterr().err  # a first day: no baseline, no warning
    lake_dir = tmp_path / "lake"
    scores = lake.read_partition(lake_dir, "emotion_scores", DAY)
    embeddings = lake.read_partition(lake_dir, "emotion_embeddings", DAY)
    other = "sad" if "happy" in scores.column("emotion").to_pylist() else "happy"
    unlike = scores.set_column(scores.schema.get_field_index("emotion"), "emotion", pa.array([other] * scores.num_rows))
    flipped = embeddings.set_column(
        embeddings.schema.get_field_index("embedding"),
        "embedding",
        pa.FixedSizeListArray.from_arrays(
            pa.array((lake.embedding_matrix(embeddings) * -1).reshape(-1)),
            embeddings.schema.field("embedding").type.list_size,
        ),
    )
    for back in range(1, 8):
        day = (dt.date.fromisoformat(DAY) - dt.timedelta(days=back)).isoformat()
        _copy_to(lake_dir, day, "emotion_scores", unlike)
        _copy_to(lake_dir, day, "emotion_embeddings", flipped)

    assert main(argv) == 0  # a warning is said, the run does not fail
    captured = capsys.readouterr()
    assert "emo: warning: check emotion_drift on emotion_scores: drift: " in captured.err
    assert "FAILED" not in captured.out + captured.err
