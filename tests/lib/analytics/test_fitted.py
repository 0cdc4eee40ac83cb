import pickle
import threading
import time

import pytest

from emo_assets.lib.analytics.fitted import (
    FittedModel,
    ModelsLockedError,
    content_version,
    load_fitted,
    make_fitted,
    models_lock,
    save_fitted,
)


def test_version_is_a_hash_of_the_content_not_of_the_time():
    import datetime as dt

    a = make_fitted("m", {"w": [1, 2]}, "fit", now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    b = make_fitted("m", {"w": [1, 2]}, "fit", now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    assert a.model_version == b.model_version and len(a.model_version) == 16
    assert a.fitted_at == "2026-01-01T00:00:00+00:00"
    assert content_version({"w": [1, 3]}, "fit") != a.model_version
    assert content_version({"w": [1, 2]}, "other reason") != a.model_version
    assert content_version(None, "too few labels") != content_version(None, "one class")


def test_save_load_round_trip_and_type_check(tmp_path):
    path = tmp_path / "models" / "m.pkl"
    fitted = make_fitted("m", {"w": 1}, "fit", {"n_recordings": 3})
    save_fitted(fitted, path)
    loaded = load_fitted(path, dict, "m")
    assert loaded == fitted and loaded.stats["n_recordings"] == 3
    with pytest.raises(TypeError, match="not a versioned list"):
        load_fitted(path, list, "m")
    save_fitted(make_fitted("m", None, "too few labels"), path)  # no model is a versioned outcome too
    assert load_fitted(path, list, "m").model is None


def test_a_file_from_before_versions_names_the_refit(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(TypeError, match=r"(?s)dict.*--refit-models.*models_job"):
        load_fitted(path, dict, "m")
    with pytest.raises(FileNotFoundError, match="materialize m first"):
        load_fitted(tmp_path / "none.pkl", dict, "m")


def test_models_lock_serialises_holders_and_times_out_with_a_remedy(tmp_path):
    inside, overlaps = [], []

    def hold():
        with models_lock(tmp_path / "models"):
            if inside:
                overlaps.append(True)
            inside.append(1)
            time.sleep(0.2)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    with models_lock(tmp_path / "models"):
        with pytest.raises(ModelsLockedError, match="another run is fitting"):
            with models_lock(tmp_path / "models", wait_s=0.2):
                pass


def test_fitted_model_is_frozen():
    fitted = make_fitted("m", 1, "r")
    assert isinstance(fitted, FittedModel)
    with pytest.raises(AttributeError):
        fitted.model_version = "x"
