"""The emotion tables are one model pass, and each is an asset of its own: selecting one table
writes that table."""

import dagster as dg
import numpy as np

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.definitions import build_definitions
from emo_assets.lib import schemas
from emo_assets.lib.store import lake
from tests.helpers import DAY, resources, write_small_day


def _written(data_dir) -> set[str]:
    return {
        t
        for t in ("emotion_embeddings", "emotion_scores", "emotion_segments")
        if lake.partition_days(data_dir / "lake", t)
    }


def test_emotion_scores_alone(tmp_path, tiny_model_dir):
    write_small_day(tmp_path / "raw" / DAY, n=2)
    res = resources(tmp_path, tiny_model_dir)
    upstream = dg.materialize(
        list(all_assets()), selection=["audio_files", "resampled_audio"], partition_key=DAY, resources=res
    )
    assert upstream.success

    alone = dg.materialize([*all_assets(), *all_checks], selection=["emotion_scores"], partition_key=DAY, resources=res)
    assert alone.success
    assert [m.asset_key.to_user_string() for m in alone.get_asset_materialization_events()] == ["emotion_scores"]
    assert _written(tmp_path) == {"emotion_scores"}
    assert lake.read_partition(tmp_path / "lake", "emotion_scores", DAY).num_rows == 2
    assert [e.check_name for e in alone.get_asset_check_evaluations()] == ["scores_sum_to_one"]

    # the same through a subset of the day's job, as the UI or `dagster job launch` would run it
    job = build_definitions(res).resolve_job_def("daily_emotion_job")
    subset = job.execute_in_process(
        partition_key=DAY, asset_selection=[dg.AssetKey("emotion_segments")], raise_on_error=False
    )
    assert subset.success
    assert [m.asset_key.to_user_string() for m in subset.get_asset_materialization_events()] == ["emotion_segments"]
    assert _written(tmp_path) == {"emotion_scores", "emotion_segments"}
    # two selections, one model: a short recording is one window whose scores are the recording's
    scores = lake.read_partition(tmp_path / "lake", "emotion_scores", DAY).sort_by("audio_id")
    segments = lake.read_partition(tmp_path / "lake", "emotion_segments", DAY).sort_by("audio_id")
    assert segments.column("audio_id").to_pylist() == scores.column("audio_id").to_pylist()
    for label in schemas.EMOTION_LABELS:
        np.testing.assert_allclose(segments.column(label).to_numpy(), scores.column(label).to_numpy(), atol=1e-6)
