"""Fitted models on disk, versioned: one file per model holding the model, its version and how it
was fitted, written atomically and read back with a type check and a remedy.

``model_version`` is a content hash (SHA-256 of the pickled model and the fit's reason, first 16
hex digits): the same fit on the same recordings gives the same version, any change gives a new
one. Every row assigned with a model carries its version.

Fitting is serialised by :func:`models_lock`, an exclusive ``flock`` on ``models.lock`` in the
models folder: a fit, and every assignment of a day with a fitted model, hold it. Day runs in
parallel therefore either fit the first version or use the one that exists; they never fit two.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo_assets.lib.files.atomic import atomic_write
from emo_assets.lib.files.flock import exclusive_flock

MODELS_LOCK = "models.lock"
# A fit plus the re-assignment of every day in the warehouse: minutes, not hours.
MODELS_LOCK_WAIT_S = 1800.0
MODELS_LOCK_POLL_S = 0.1
VERSION_HEX_DIGITS = 16


class ModelsLockedError(RuntimeError):
    pass


@dataclass(frozen=True)
class FittedModel:
    """What one fit produced, as kept on disk.

    ``model`` is None when nothing could be fitted (``reason`` says why; e.g. too few labels, so
    predictions come from a rule): that outcome is versioned too, so a later run does not fit
    something else behind the back of the days already assigned. ``stats`` holds the fit's numbers
    for run metadata (distinct recordings, label conflicts, ...).
    """

    asset: str
    model_version: str
    fitted_at: str  # ISO 8601, UTC
    model: Any | None
    reason: str
    stats: Mapping[str, Any] = field(default_factory=dict)


def content_version(model: Any | None, reason: str) -> str:
    """The version of a fit: a hash of what it is (the pickled model and the reason), not of when."""
    payload = pickle.dumps((model, reason), protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(payload).hexdigest()[:VERSION_HEX_DIGITS]


def make_fitted(
    asset: str,
    model: Any | None,
    reason: str,
    stats: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> FittedModel:
    """Wrap a fit's result with its content version and the time of the fit."""
    now = now or dt.datetime.now(dt.UTC)
    return FittedModel(
        asset=asset,
        model_version=content_version(model, reason),
        fitted_at=now.isoformat(timespec="seconds"),
        model=model,
        reason=reason,
        stats=dict(stats or {}),
    )


def write_pickle_atomic(obj: Any, path: Path) -> None:
    """Pickle ``obj`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and a failed write leaves the old file in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def save_fitted(fitted: FittedModel, path: Path) -> None:
    """Write ``fitted`` to ``path`` atomically; a stale mark of the model it replaces is removed."""
    write_pickle_atomic(fitted, path)
    stale_mark(path).unlink(missing_ok=True)


STALE_SUFFIX = ".stale.json"


def stale_mark(path: Path) -> Path:
    """The file saying the fitted model at ``path`` must be refitted: ``<asset>.pkl.stale.json``."""
    path = Path(path)
    return path.with_name(path.name + STALE_SUFFIX)


def mark_stale(path: Path, reason: str, now: dt.datetime | None = None) -> Path:
    """Mark the fitted model at ``path`` stale: the next run that materializes it fits it anew (on
    the rows the lake holds then) and re-assigns every day, whatever its ``refit`` setting."""
    mark = stale_mark(path)
    text = json.dumps({"since": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"), "reason": reason})
    with atomic_write(mark) as f:
        f.write(text.encode())
    return mark


def is_stale(path: Path) -> bool:
    return stale_mark(path).exists()


def load_fitted(path: Path, expected: type, asset: str) -> FittedModel:
    """Read a file written by :func:`save_fitted` whose model is an ``expected`` (or None).

    Raises ``FileNotFoundError`` for a missing file and ``TypeError`` for anything else (a file from
    before models were versioned included), each naming the remedy.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; materialize {asset} first")
    with path.open("rb") as f:
        obj = pickle.load(f)
    if not isinstance(obj, FittedModel) or not (obj.model is None or isinstance(obj.model, expected)):
        held = type(obj.model if isinstance(obj, FittedModel) else obj).__name__
        raise TypeError(
            f"{path} holds a {held}, not a versioned {expected.__name__}; refit the models: "
            "emo run --date DAY --refit-models, or launch models_job"
        )
    return obj


@contextmanager
def models_lock(models_dir: Path, wait_s: float = MODELS_LOCK_WAIT_S) -> Iterator[None]:
    """Hold the models folder's lock: one fit or one day's assignment at a time, across processes."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    lock = models_dir / MODELS_LOCK

    def refused() -> ModelsLockedError:
        return ModelsLockedError(
            f"{lock} stayed held for {wait_s:.0f} s: another run is fitting the models or assigning a "
            "day. Wait for it to finish (see the runs in the Dagster UI), then re-run this step."
        )

    with exclusive_flock(lock, wait_s, MODELS_LOCK_POLL_S, refused):
        yield
