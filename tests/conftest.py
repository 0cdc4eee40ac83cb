"""Shared fixtures. Keep them small: each one builds its data once, into a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny emotion2vec+ model directory (model id `random-tiny-seed0`)."""
    from emo_assets.lib.model_dir import make_test_model

    return make_test_model(tmp_path_factory.mktemp("models") / "tiny", size="tiny", seed=0)
