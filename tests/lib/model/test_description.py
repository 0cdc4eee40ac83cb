"""Describing a model setting checks it without loading weights; weights load on first inference."""

import numpy as np
import pytest

from emo_assets.lib.model.description import LazyEmotionModel, describe_model
from emo_assets.lib.model.emotion_model import ModelLoadError, load_emotion_model


def test_describe_reads_the_model_files(tiny_model_dir):
    description = describe_model(str(tiny_model_dir), device="cpu")
    loaded = load_emotion_model(str(tiny_model_dir), device="cpu")
    assert description.model_id == loaded.model_id == "random-tiny-seed0"
    assert description.is_random
    assert (description.embed_dim, description.min_samples) == (loaded.embed_dim, loaded.min_samples)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"device": "tpu"}, "EMO_DEVICE"),
        ({"precision": "int4"}, "EMO_PRECISION"),
        ({"half": True, "device": "cpu"}, "EMO_HALF"),
        ({"hub": "github"}, "EMO_MODEL_HUB"),
    ],
)
def test_bad_settings_are_named(tiny_model_dir, settings, named):
    with pytest.raises(ModelLoadError, match=named):
        describe_model(str(tiny_model_dir), **settings)


def test_a_config_that_is_not_emotion2vec_is_refused(tmp_path, tiny_model_dir):
    for name in ("model.pt", "tokens.txt"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    (tmp_path / "config.yaml").write_text("model: Emotion2vec\nmodel_conf: {embed_dim: 8}\n")
    with pytest.raises(ModelLoadError, match="does not describe an emotion2vec model"):
        describe_model(str(tmp_path), device="cpu")


def test_weights_load_once_and_only_when_inference_runs(tiny_model_dir):
    calls = []

    def load():
        calls.append(1)
        return load_emotion_model(str(tiny_model_dir), device="cpu")

    lazy = LazyEmotionModel(describe_model(str(tiny_model_dir), device="cpu"), load)
    assert (lazy.model_id, lazy.embed_dim) == ("random-tiny-seed0", 32)
    assert calls == []
    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    [result] = lazy.infer([wave])
    lazy.infer([wave])
    assert calls == [1]
    assert result.scores.sum() == pytest.approx(1.0, abs=1e-5)
