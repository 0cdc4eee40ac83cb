"""Files under the data directory that more than one module finds: the fitted models.

A fitted-model asset ``<asset>`` keeps its model in ``<models_dir>/<asset>.pkl``: the file is
named after the asset, like a lake folder after its table.
"""

from __future__ import annotations

from pathlib import Path

FITTED_MODEL_SUFFIX = ".pkl"


def fitted_model_path(models_dir: Path, asset: str) -> Path:
    """The file the fitted-model asset ``asset`` (``emotion_cluster_model``, ...) is stored in."""
    return Path(models_dir) / f"{asset}{FITTED_MODEL_SUFFIX}"
