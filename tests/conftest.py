"""Shared fixtures. Keep them small: each one builds its data once, into a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import DAY, failed_steps, lake_tables, materialize, warehouse_tables, write_small_day


@pytest.fixture(scope="session", autouse=True)
def files_settle_at_once():
    """Test days are written whole just before they run: no settle time (EMO_SETTLE_S=0), also for
    the `emo` processes the tests spawn. The settle rule's own tests set their settle time."""
    from emo_assets.lib.audio import settle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settle, "DEFAULT_SETTLE_S", 0.0)
        patch.setenv("EMO_SETTLE_S", "0")
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny emotion2vec+ model directory (model id `random-tiny-seed0`)."""
    from emo_assets.lib.model.model_dir import make_test_model

    return make_test_model(tmp_path_factory.mktemp("models") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def reference_day(tmp_path_factory, tiny_model_dir) -> tuple[Path, dict, dict]:
    """The small day run once on a clean data directory: (data dir, warehouse tables, lake tables)."""
    data_dir = tmp_path_factory.mktemp("reference")
    write_small_day(data_dir / "raw" / DAY)
    result = materialize(data_dir, tiny_model_dir)
    assert result.success, failed_steps(result)
    return data_dir, warehouse_tables(data_dir), lake_tables(data_dir)


@pytest.fixture(scope="session")
def rel():
    """The helpers module (``rel.materialize``, ``rel.warehouse_tables``...)."""
    return helpers
