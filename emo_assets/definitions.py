"""The one place the Definitions are built, and where the EMO_* environment variables are wired.

Every setting is a field of a resource (``storage``, ``emotion_model`` or ``ray``) with its default there,
and an environment variable in :data:`SETTINGS`. A setting is resolved when a run starts (and when
a schedule or sensor ticks), in the process that runs it, never when the code location loads:
the value given for this run (the launchpad's resource config, or a flag of `emo run`) wins, then
the environment variable, then the field's default. So the UI, the daemon and `emo` read the same
environment at the same moment.

Dagster's ``EnvVar`` config source cannot do this alone: it has no default for an unset variable
(dagster-io/dagster#16232) and it fills only ``str`` and ``int`` fields, while every setting here
has a default and three are ``bool`` or ``float``. The code location's resources are therefore
resolvers run at launch (:func:`launch_resources`), reading each variable with
``dg.EnvVar(name).get_value()``; the launchpad shows every setting as an optional field naming
its variable.

One exception is read when the code location loads: ``EMO_SQL_DIR``, because each SQL file there
is an asset and Dagster draws the graph at load. Reload the code location after changing it, as
after adding a ``.sql`` file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks, monitoring_checks
from emo_assets.jobs import RUN_EXECUTOR, daily_emotion_job, models_job, retention_job
from emo_assets.lib.audio.settle import DEFAULT_SETTLE_S
from emo_assets.lib.model.model_dir import ModelLoadError
from emo_assets.lib.model.settings import ModelSettingError, check_window_s
from emo_assets.resources import (
    PACKAGED_SQL_DIR,
    EmotionModelResource,
    RayResource,
    SettingError,
    StorageResource,
    check_segments,
)
from emo_assets.schedules import daily_emotion_schedule, models_schedule, retention_schedule
from emo_assets.sensors import PUBLISH_SENSORS, raw_files_sensor


def _text(env: str, text: str) -> str:
    return text


def _flag(env: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise SettingError(f"{env}={text!r} is not a switch; use 1 (on) or 0 (off)")


def _count(env: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise SettingError(f"{env}={text!r} is not a count of threads; use 0 (every core) or a positive number")
    return value


def _seconds(env: str, text: str) -> float:
    """EMO_WINDOW_S: the model's own rule (ModelSettings checks the same), as a SettingError."""
    try:
        return check_window_s(text.strip())
    except ModelSettingError as exc:
        raise SettingError(str(exc)) from None


def _segments(env: str, text: str) -> str:
    return check_segments(text.strip().lower())


def _rest_seconds(env: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise SettingError(f"{env}={text!r} is not a number of seconds; use 0 (read files at once) or more")
    return value


def _lake_uri(env: str, text: str) -> str | None:
    """EMO_LAKE_URI: empty is the local lake; else a URI whose scheme we serve (the bucket is checked
    to answer when a run starts: StorageResource.check_lake)."""
    from emo_assets.lib.files.objectstore import split_uri

    if not text.strip():
        return None
    try:
        split_uri(text.strip(), env)
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    return text.strip()


def _ray_address(env: str, text: str) -> str | None:
    """EMO_RAY_ADDRESS: empty is the in-process model; else host:port (the GCS) or ray://host:port."""
    value = text.strip()
    if not value:
        return None
    host, _, port = value.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SettingError(
            f"{env}={text!r} is not a Ray address; use host:port of the cluster's head (its GCS), "
            "ray://host:port for the Ray client, or leave it empty to score in this process"
        )
    return value


def _actors(env: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise SettingError(f"{env}={text!r} is not a number of model actors; use 0 (as many as fit) or more")
    return value


def _gpus(env: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise SettingError(f"{env}={text!r} is not a number of GPUs; use 0 (CPU actors), a fraction such as 0.5, or 1")
    return value


def _days(env: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise SettingError(f"{env}={text!r} is not a number of days; use 1 or more (unset: kept for ever)")
    return value


@dataclass(frozen=True)
class Setting:
    """A resource field and the environment variable that sets it."""

    env: str
    resource: str
    field: str
    parse: Callable[[str, str], object] = _text
    at_load: bool = False  # read when the code location loads (the graph depends on it)
    unset: str = ""  # what an unset field means, when its default is None


SETTINGS = (
    Setting("EMO_DATA_DIR", "storage", "data_dir"),
    Setting("EMO_SQL_DIR", "storage", "sql_dir", at_load=True),
    Setting("EMO_SETTLE_S", "storage", "settle_s", _rest_seconds, unset=f"{DEFAULT_SETTLE_S:g} s"),
    Setting("EMO_LAKE_URI", "storage", "lake_uri", _lake_uri, unset="the lake in the data directory"),
    Setting("EMO_KEEP_RAW_DAYS", "storage", "keep_raw_days", _days, unset="kept for ever"),
    Setting("EMO_KEEP_FLAC_DAYS", "storage", "keep_flac_days", _days, unset="kept for ever"),
    Setting("EMO_KEEP_TABLES_DAYS", "storage", "keep_tables_days", _days, unset="kept for ever"),
    Setting("EMO_MODEL", "emotion_model", "model"),
    Setting("EMO_MODEL_HUB", "emotion_model", "hub"),
    Setting("EMO_DEVICE", "emotion_model", "device"),
    Setting("EMO_HALF", "emotion_model", "half", _flag),
    Setting("EMO_PRECISION", "emotion_model", "precision"),
    Setting("EMO_THREADS", "emotion_model", "threads", _count),
    Setting("EMO_WINDOW_S", "emotion_model", "window_s", _seconds),
    Setting("EMO_FRAMES", "emotion_model", "frame_granularity", _flag),
    Setting("EMO_SEGMENTS", "emotion_model", "segments", _segments),
    Setting("EMO_RAY_ADDRESS", "ray", "address", _ray_address, unset="no Ray: every stage runs in the run's process"),
    Setting("EMO_RAY_ACTORS", "ray", "actors", _actors),
    Setting("EMO_RAY_GPUS_PER_ACTOR", "ray", "gpus_per_actor", _gpus),
)

RESOURCES: dict[str, type[dg.ConfigurableResource]] = {
    "storage": StorageResource,
    "emotion_model": EmotionModelResource,
    "ray": RayResource,
}

_CONFIG_TYPES = {
    _text: str,
    _flag: bool,
    _count: int,
    _seconds: float,
    _rest_seconds: float,
    _lake_uri: str,
    _days: int,
    _segments: str,
    _ray_address: str,
    _actors: int,
    _gpus: float,
}


def _default(setting: Setting) -> object:
    return RESOURCES[setting.resource].model_fields[setting.field].default


def _default_text(setting: Setting) -> str:
    """The default as the launchpad says it: what an unset field means, never a bare None."""
    default = _default(setting)
    return setting.unset if default is None else repr(default)


def resolve_settings(resource: str, given: Mapping[str, object]) -> dict[str, object]:
    """Field values of ``resource`` for a run starting now: ``given`` (where not None), else the
    environment variable, else nothing (the field's default applies)."""
    values: dict[str, object] = {}
    for setting in SETTINGS:
        if setting.resource != resource:
            continue
        if given.get(setting.field) is not None:
            values[setting.field] = given[setting.field]
            continue
        text = dg.EnvVar(setting.env).get_value()
        if text is not None:
            values[setting.field] = setting.parse(setting.env, text)
    return values


def resources_from_env(**overrides) -> dict[str, dg.ConfigurableResource]:
    """The resources of a run started now (the `emo` commands): each override (a command's flag,
    None when not given) goes to the resource that has that field, then EMO_*, then defaults."""
    fields = {s.field for s in SETTINGS}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; settings are {sorted(fields)}")
    return {name: cls(**resolve_settings(name, overrides)) for name, cls in RESOURCES.items()}


def _launch_resource(name: str, cls: type[dg.ConfigurableResource]) -> dg.ResourceDefinition:
    """``cls`` built when a run starts, from the run's config, the environment and the defaults."""
    schema = {
        s.field: dg.Field(
            dg.Noneable(_CONFIG_TYPES[s.parse]),
            default_value=None,
            is_required=False,
            description=f"for this run only; empty: ${s.env} when set, else {_default_text(s)}",
        )
        for s in SETTINGS
        if s.resource == name and not s.at_load
    }

    # The launchpad shows the whole docstring as one paragraph, code in single backticks (markdown).
    description = " ".join((cls.__doc__ or "").split()).replace("``", "`")

    @dg.resource(config_schema=schema, description=description)
    def _resolve(context: dg.InitResourceContext) -> dg.ConfigurableResource:
        given = {field: value for field, value in context.resource_config.items() if value is not None}
        try:
            resource = cls(**resolve_settings(name, context.resource_config))
            if isinstance(resource, EmotionModelResource):
                resource.settings()  # checked now: a setting the model cannot use fails the run before any step
        except (ModelLoadError, ValueError) as exc:  # SettingError, pydantic's ValidationError
            if not given:
                raise
            values = ", ".join(f"{field}={value!r}" for field, value in sorted(given.items()))
            raise SettingError(
                f"{exc}\n(this run sets resources.{name}.config: {values}; a value set there takes the place of "
                "the EMO_* variable the message names: change it in the run's config)"
            ) from None
        return resource

    return _resolve


def launch_resources() -> dict[str, dg.ResourceDefinition]:
    """The code location's resources: settings resolved at launch (nothing is read now)."""
    return {name: _launch_resource(name, cls) for name, cls in RESOURCES.items()}


def build_definitions(resources: Mapping[str, object], sql_dir: Path | None = None) -> dg.Definitions:
    """The Definitions with ``resources``; SQL models from ``sql_dir`` (default: the folder of a
    concrete storage resource, else the packaged one)."""
    if sql_dir is None:
        storage = resources.get("storage")
        sql_dir = storage.sql_models_dir if isinstance(storage, StorageResource) else PACKAGED_SQL_DIR
    return dg.Definitions(
        assets=list(all_assets(Path(sql_dir))),
        asset_checks=[*all_checks, *monitoring_checks],
        jobs=[daily_emotion_job, models_job, retention_job],
        schedules=[daily_emotion_schedule, models_schedule, retention_schedule],
        sensors=[raw_files_sensor, *PUBLISH_SENSORS],
        resources=dict(resources),
        executor=RUN_EXECUTOR,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev -w workspace.yaml`: settings are resolved at launch, except the
    SQL folder (EMO_SQL_DIR), whose files are assets of the graph."""
    sql_dir = dg.EnvVar("EMO_SQL_DIR").get_value(str(PACKAGED_SQL_DIR))
    return build_definitions(launch_resources(), sql_dir=Path(sql_dir))
