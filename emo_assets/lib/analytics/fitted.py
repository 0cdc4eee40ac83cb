"""Fitted models on disk: pickled atomically, read back with a type check and a remedy."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from emo_assets.lib.files.atomic import atomic_write


def write_pickle_atomic(obj: Any, path: Path) -> None:
    """Pickle ``obj`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and a failed write leaves the old file in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_pickle(path: Path, expected: type, asset: str) -> Any:
    """Unpickle a file this project wrote and check its type; ``asset`` names the remedy."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; materialize {asset} first")
    with path.open("rb") as f:
        obj = pickle.load(f)
    if not isinstance(obj, expected):
        raise TypeError(f"{path} holds a {type(obj).__name__}, not a {expected.__name__}; re-materialize {asset}")
    return obj
