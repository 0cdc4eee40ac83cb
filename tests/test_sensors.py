"""The run-status sensors publish the analysts' copy when a launched run ends, successful or failed."""

import dagster as dg

from emo_assets.lib.store import warehouse
from emo_assets.resources import StorageResource
from emo_assets.sensors import publish_on_failure_sensor, publish_on_success_sensor
from tests.helpers import DAY, resources, write_small_day


def _day_run(tmp_path, tiny_model_dir, instance, selection):
    """A day's run that does not publish by itself (a launched run: the sensors do)."""
    from emo_assets.assets import all_assets

    return dg.materialize(
        list(all_assets()),
        selection=selection,
        partition_key=DAY,
        resources=resources(tmp_path, tiny_model_dir),
        instance=instance,
        raise_on_error=False,
    )


def test_a_successful_run_is_published_by_the_success_sensor(tmp_path, tiny_model_dir):
    write_small_day(tmp_path / "raw" / DAY, n=2)
    instance = dg.DagsterInstance.ephemeral()
    result = _day_run(tmp_path, tiny_model_dir, instance, ["audio_files"])
    assert result.success
    assert not warehouse.read_copy_path(tmp_path / "warehouse.duckdb").exists()  # nothing published mid-run
    context = dg.build_run_status_sensor_context(
        sensor_name=publish_on_success_sensor.name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
        resources={"storage": StorageResource(data_dir=str(tmp_path))},
    )
    assert publish_on_success_sensor(context) is None
    con = warehouse.open_read_copy(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM audio_files").fetchone() == (2,)
    finally:
        con.close()


def test_a_failed_run_publishes_what_succeeded(tmp_path, tiny_model_dir):
    write_small_day(tmp_path / "raw" / DAY, n=2)
    instance = dg.DagsterInstance.ephemeral()
    # emotion_clusters without a fitted cluster model: the step fails; audio_files succeeded before it
    result = _day_run(tmp_path, tiny_model_dir, instance, ["audio_files", "emotion_clusters"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name=publish_on_failure_sensor.name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure,
        resources={"storage": StorageResource(data_dir=str(tmp_path))},
    ).for_run_failure()
    assert publish_on_failure_sensor(context) is None
    con = warehouse.open_read_copy(tmp_path)
    try:
        assert con.execute("SELECT count(*) FROM audio_files").fetchone() == (2,)
    finally:
        con.close()
