"""Configuration of a run: where data lives, which model, which warehouse.

Every setting has a default that works offline on one laptop; ``definitions.py`` wires the
environment variables (EMO_DATA_DIR, EMO_MODEL, EMO_MODEL_HUB, EMO_DEVICE, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
from pathlib import Path

import dagster as dg
import pydantic

from emo_assets.lib.model.settings import ModelSettings
from emo_assets.lib.store.paths import fitted_model_path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The analysts' SQL models shipped with the package (package data: an installed wheel has them).
PACKAGED_SQL_DIR = Path(str(importlib.resources.files("emo_assets").joinpath("dbt_like_sql")))


class SettingError(ValueError):
    """An EMO_* variable holds a value its setting cannot take; the message names both."""


SEGMENTS = ("turns", "windows")


def check_segments(value: str) -> str:
    """EMO_SEGMENTS: ``turns`` or ``windows``, or SettingError naming the accepted values."""
    if value not in SEGMENTS:
        raise SettingError(
            f"EMO_SEGMENTS={value!r} is not a segmentation; use turns (speech turns found by the "
            "voice-activity model) or windows (fixed windows of EMO_WINDOW_S over the whole recording)"
        )
    return value


def run_is_active(instance: dg.DagsterInstance, run_id: str) -> bool:
    """True while the run is queued or in progress in ``instance`` (unknown runs are not)."""
    run = instance.get_run_by_id(run_id)
    return run is not None and not run.is_finished


class StorageResource(dg.ConfigurableResource):
    """Where things live: the data directory (landing zone, lake, resampled audio, fitted models,
    reports, locks, warehouse) and the folder of the analysts' SQL models. ``lake_uri``
    (``s3://bucket/prefix``) moves the lake tables, the resampled audio and the day locks to an
    object store; the rest stays in the data directory."""

    data_dir: str = str(PROJECT_ROOT / "data")
    sql_dir: str = str(PACKAGED_SQL_DIR)
    # None: the lake under data_dir (lake/, resampled/, locks/). A URI: all three in the object store.
    lake_uri: str | None = None
    # Seconds a landed file must rest before a run reads it (None: settle.DEFAULT_SETTLE_S).
    settle_s: float | None = None
    # Retention in days (None: kept for ever): raw audio, 16 kHz FLACs, table rows (lib/privacy/retention.py).
    keep_raw_days: int | None = None
    keep_flac_days: int | None = None
    keep_tables_days: int | None = None

    @property
    def settle_seconds(self) -> float:
        """The settle rule's time (lib/audio/settle.py): `emo run`, the schedule and the sensor use it."""
        from emo_assets.lib.audio import settle

        return settle.DEFAULT_SETTLE_S if self.settle_s is None else self.settle_s

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @pydantic.field_validator("lake_uri")
    @classmethod
    def _check_lake_uri(cls, value: str | None) -> str | None:
        """A URI the project cannot use is refused when the resource is made, before any file is touched."""
        if not value:
            return None
        from emo_assets.lib.files.objectstore import split_uri

        try:
            scheme, bucket, prefix = split_uri(value)
        except ValueError as exc:
            raise SettingError(str(exc)) from None
        return f"{scheme}://{bucket}/{prefix}".rstrip("/")

    def check_lake(self) -> None:
        """At a run's start: an object-store lake's bucket answers (ObjectStoreError naming EMO_LAKE_URI)."""
        if self.lake_uri:
            from emo_assets.lib.files.objectstore import check_reachable

            check_reachable(self.lake_uri)

    @property
    def lake_dir(self) -> Path | str:
        """The lake's root: ``data/lake``, or the URI ``lake_uri`` (lib/store/lake.py takes both)."""
        return self.lake_uri or self.root / "lake"

    @property
    def resampled_dir(self) -> Path | str:
        """The 16 kHz FLACs: ``data/resampled``, or ``<lake_uri>/_resampled`` in the object store."""
        return f"{self.lake_uri}/_resampled" if self.lake_uri else self.root / "resampled"

    @property
    def resampled_root(self) -> Path | str:
        """What ``resampled_audio.path`` is relative to, the folder holding :attr:`resampled_dir`: the data
        directory (``resampled/date=<day>/<audio_id>.flac``), or ``lake_uri`` (``_resampled/date=<day>/...``)."""
        return self.lake_uri or self.root

    def resampled_day_dir(self, day: str) -> Path | str:
        """The folder of one day's 16 kHz FLACs (``date=<day>`` under :attr:`resampled_dir`)."""
        if self.lake_uri:
            return f"{self.resampled_dir}/date={day}"
        return self.resampled_dir / f"date={day}"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labels"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def similarity_dir(self) -> Path:
        return self.root / "similarity"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def locks_dir(self) -> Path:
        """One lock and lease per day (a second run of a running day is refused): ``data/locks``, or
        ``<lake_uri>/_locks`` so that every machine writing to the bucket sees them (lib/store/day_lock.py)."""
        return f"{self.lake_uri}/_locks" if self.lake_uri else self.root / "locks"

    @property
    def sql_models_dir(self) -> Path:
        """The analysts' SQL models: one ``<name>.sql`` per table (default: the packaged ones)."""
        return Path(self.sql_dir).expanduser().resolve()

    def fitted_model_path(self, asset: str) -> Path:
        """The file a fitted-model asset (``emotion_cluster_model``, ...) is stored in."""
        return fitted_model_path(self.models_dir, asset)


class EmotionModelResource(dg.ConfigurableResource):
    """emotion2vec+ through funasr. ``model`` is a hub id or a local model directory; the fields are
    those of ``ModelSettings`` in lib/model/settings.py (``threads=0``: every core this
    process may use; ``frame_granularity``: also write ``emotion_frames``)."""

    # Dagster's launchpad needs the fields declared; their defaults are ModelSettings' own.
    model: str = ModelSettings.model
    hub: str = ModelSettings.hub
    device: str = ModelSettings.device
    half: bool = ModelSettings.half
    precision: str = ModelSettings.precision
    threads: int = ModelSettings.threads
    window_s: float = ModelSettings.window_s
    frame_granularity: bool = ModelSettings.frames
    # What a row of emotion_segments is: "turns" (speech turns found by silero-vad; silence is not
    # scored) or "windows" (fixed windows of window_s over the whole recording).
    segments: str = "turns"

    @pydantic.model_validator(mode="after")
    def _check_window(self):
        """A window the model cannot use is refused when the resource is made, before any file is touched."""
        from emo_assets.lib.model.settings import check_window_s

        check_window_s(self.window_s)
        check_segments(self.segments)
        return self

    @property
    def speech_turns(self) -> bool:
        return self.segments == "turns"

    def settings(self) -> ModelSettings:
        """The one settings value, checked (ModelSettingError names the bad EMO_* setting): every
        field of this resource that ModelSettings has, and ``frame_granularity`` as ``frames``."""
        shared = {f.name for f in dataclasses.fields(ModelSettings)} & set(type(self).model_fields)
        return ModelSettings(**{name: getattr(self, name) for name in shared}, frames=self.frame_granularity)

    def load(self):
        """The model (an EmotionScorer), described now (every setting resolved and checked) and
        loaded on first use. One copy of the weights per process, shared by every asset and check."""
        from emo_assets.lib.model.loading import LazyEmotionModel, describe_model

        description = describe_model(self.settings())
        return LazyEmotionModel(description, functools.partial(_load_model, description))


class RayResource(dg.ConfigurableResource):
    """A Ray cluster for a day's heavy stages: with ``address`` set, ``resampled_audio`` decodes and
    resamples each recording as a Ray CPU task and ``emotion_tables`` scores in a pool of model actors
    (lib/ray_cluster.py, lib/model/ray_scoring.py); unset, both run in the run's own process."""

    # host:port of the cluster's GCS, or ray://host:port (the Ray client); None: in this process.
    address: str | None = None
    # Model actors on the cluster (0: as many as it has room for) and the GPUs each asks for
    # (0: one unit of the cluster's `emo_model` resource instead, for CPU nodes).
    actors: int = 0
    gpus_per_actor: float = 0.0


@functools.lru_cache(maxsize=1)
def _load_model(description):
    from emo_assets.lib.model.loading import load_model

    return load_model(description)
