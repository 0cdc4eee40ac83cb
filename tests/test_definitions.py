"""Settings are resolved when a run starts, not when the code location loads; a run's own
config (the launchpad) and `emo` flags override the environment, each on its own resource."""

import os
import shutil
import time

import dagster as dg
import pytest

from emo_assets import definitions
from emo_assets.definitions import SettingError, defs, launch_resources, resources_from_env
from emo_assets.jobs import daily_emotion_job
from emo_assets.lib.store import lake
from emo_assets.resources import PROJECT_ROOT, EmotionModelResource, StorageResource
from tests.helpers import DAY, write_small_day


@pytest.fixture
def clean_env(monkeypatch):
    for setting in definitions.SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    return monkeypatch


def test_environment_is_read_at_launch_not_at_load(tmp_path, clean_env):
    at_load, at_launch, launchpad = tmp_path / "at_load", tmp_path / "at_launch", tmp_path / "launchpad"
    for data_dir in (at_load, at_launch, launchpad):
        write_small_day(data_dir / "raw" / DAY, n=1)
    clean_env.setenv("EMO_DATA_DIR", str(at_load))
    job = defs().resolve_job_def("daily_emotion_job")  # the code location loads
    clean_env.setenv("EMO_DATA_DIR", str(at_launch))  # then the environment changes
    result = job.execute_in_process(partition_key=DAY, asset_selection=[dg.AssetKey("audio_files")])
    assert result.success
    assert lake.partition_days(at_launch / "lake", "audio_files") == [DAY]
    assert not (at_load / "lake").exists()
    # a value given for the run (the launchpad's resource config) wins over the environment
    result = job.execute_in_process(
        partition_key=DAY,
        asset_selection=[dg.AssetKey("audio_files")],
        run_config={"resources": {"storage": {"config": {"data_dir": str(launchpad)}}}},
    )
    assert result.success
    assert lake.partition_days(launchpad / "lake", "audio_files") == [DAY]


def test_launch_resources_resolve_every_setting_from_the_environment(tmp_path, clean_env):
    clean_env.setenv("EMO_DATA_DIR", str(tmp_path))
    clean_env.setenv("EMO_MODEL_HUB", "hf")
    clean_env.setenv("EMO_HALF", "1")
    clean_env.setenv("EMO_WINDOW_S", "12.5")
    clean_env.setenv("EMO_FRAMES", "true")
    with dg.build_resources(launch_resources()) as built:
        storage, model = built.storage, built.emotion_model
    assert isinstance(storage, StorageResource) and isinstance(model, EmotionModelResource)
    assert storage.root == tmp_path.resolve()
    assert (model.hub, model.half, model.window_s, model.frame_granularity) == ("hf", True, 12.5, True)
    assert model.model == EmotionModelResource().model  # unset: the field's default


def test_each_override_goes_to_the_resource_that_has_it(tmp_path, clean_env):
    clean_env.setenv("EMO_DEVICE", "cuda")
    clean_env.setenv("EMO_SQL_DIR", str(tmp_path / "env_sql"))
    res = resources_from_env(data_dir=str(tmp_path), sql_dir=str(tmp_path / "sql"), hub="hf", device=None)
    assert res["storage"].sql_models_dir == tmp_path / "sql"
    assert res["storage"].root == tmp_path.resolve()
    assert res["emotion_model"].hub == "hf"
    assert res["emotion_model"].device == "cuda"  # flag not given: the environment
    with pytest.raises(TypeError, match="unknown setting"):
        resources_from_env(warehouse="x")


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("EMO_HALF", "maybe"),
        ("EMO_WINDOW_S", "long"),
        ("EMO_WINDOW_S", "-3"),
        ("EMO_SEGMENTS", "sentences"),
        ("EMO_RAY_ADDRESS", "head-node"),
        ("EMO_RAY_ADDRESS", "ray://head:port"),
        ("EMO_RAY_ACTORS", "-1"),
        ("EMO_RAY_GPUS_PER_ACTOR", "some"),
    ],
)
def test_a_bad_value_names_its_variable(clean_env, env, value):
    clean_env.setenv(env, value)
    with pytest.raises(SettingError, match=env):
        resources_from_env()


def test_sensor_ticks_with_the_launch_resources(tmp_path, clean_env):
    old = time.time() - 3600  # settled: not being copied any more
    for path in write_small_day(tmp_path / "raw" / DAY, n=1) + [tmp_path / "raw" / DAY / "notes.wav"]:
        os.utime(path, (old, old))
    clean_env.setenv("EMO_DATA_DIR", str(tmp_path))
    loaded = defs()
    sensor = loaded.get_sensor_def("raw_files_sensor")
    with dg.build_sensor_context(resources=launch_resources(), definitions=loaded) as context:
        requests = sensor.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == [DAY]


def test_segments_default_to_speech_turns_and_fixed_windows_are_switched_on_at_launch(clean_env):
    with dg.build_resources(launch_resources()) as built:
        assert (built.emotion_model.segments, built.emotion_model.speech_turns) == ("turns", True)
    clean_env.setenv("EMO_SEGMENTS", "Windows")
    with dg.build_resources(launch_resources()) as built:
        assert (built.emotion_model.segments, built.emotion_model.speech_turns) == ("windows", False)


def test_the_instance_fails_a_dead_run_and_retries_it_once_from_its_first_step(tmp_path):
    """The repository's dagster.yaml (copied by `make ui`, extended by `make cluster-up`) loads with
    Dagster's default run launcher: run monitoring on, no resume (that launcher cannot), one retry of
    a run whose process died but none of a step's failure; the day's job retries every step, so its
    first step claims the day again (tests/cluster/test_dagster_run_killed.py kills such a run)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_launcher) is dg.DefaultRunLauncher
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
    assert daily_emotion_job.tags["dagster/retry_strategy"] == "ALL_STEPS"


def test_ray_settings_default_to_the_in_process_model_and_are_read_at_launch(clean_env):
    with dg.build_resources(launch_resources()) as built:
        ray = built.ray
        assert (ray.address, ray.actors, ray.gpus_per_actor) == (None, 0, 0.0)
    clean_env.setenv("EMO_RAY_ADDRESS", " 10.0.0.5:6379 ")
    clean_env.setenv("EMO_RAY_ACTORS", "3")
    clean_env.setenv("EMO_RAY_GPUS_PER_ACTOR", "0.5")
    with dg.build_resources(launch_resources()) as built:
        ray = built.ray
        assert (ray.address, ray.actors, ray.gpus_per_actor) == ("10.0.0.5:6379", 3, 0.5)
    clean_env.setenv("EMO_RAY_ADDRESS", "")
    with dg.build_resources(launch_resources()) as built:
        assert built.ray.address is None


def test_a_bad_model_setting_in_a_runs_config_fails_the_run_at_its_start_naming_the_config(
    clean_env, tmp_path, tiny_model_dir
):
    """Set in the launchpad (resources.emotion_model.config): refused when the run's resources are
    built, before any step touches a file, and the message says where the value came from."""
    write_small_day(tmp_path / "raw" / DAY)
    clean_env.setenv("EMO_DATA_DIR", str(tmp_path))
    clean_env.setenv("EMO_MODEL", str(tiny_model_dir))
    result = dg.materialize(
        list(defs().assets),
        partition_key=DAY,
        resources=launch_resources(),
        run_config={"resources": {"emotion_model": {"config": {"device": "banana"}}}},
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert failures, [e.event_type_value for e in result.all_events]
    message = str(failures[0].event_specific_data.error)
    assert "EMO_DEVICE='banana' is not a device" in message
    assert "this run sets resources.emotion_model.config: device='banana'" in message
    assert not any(e.is_step_success for e in result.all_events)
    assert not (tmp_path / "lake").exists() or not list((tmp_path / "lake").rglob("*.parquet"))


def test_the_launchpad_says_what_each_unset_setting_means():
    """Each field of a resource's run config names its variable and the value an unset field
    takes: the settle time, the local lake, kept for ever, no Ray; never a bare None."""
    said = {}
    for name, resource in launch_resources().items():
        for field, spec in resource.config_schema.config_type.fields.items():
            said[f"{name}.{field}"] = spec.description
    assert "None" not in " ".join(said.values()), said
    assert said["storage.settle_s"].endswith("$EMO_SETTLE_S when set, else 10 s")
    assert said["storage.lake_uri"].endswith("else the lake in the data directory")
    assert said["storage.keep_raw_days"].endswith("else kept for ever")
    assert said["ray.address"].endswith("else no Ray: every stage runs in the run's process")
    assert said["emotion_model.segments"].endswith("$EMO_SEGMENTS when set, else 'turns'")


def test_every_schedule_and_sensor_says_what_it_does_in_the_ui():
    loaded = defs()
    described = {s.name: s.description for s in [*loaded.schedules, *loaded.sensors]}
    assert {"daily_emotion_schedule", "raw_files_sensor", "publish_on_success_sensor"} <= set(described)
    assert all(text and len(text) > 40 for text in described.values()), described
