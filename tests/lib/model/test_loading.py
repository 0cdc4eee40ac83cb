"""Loading emotion2vec+ through funasr (described first, weights on first use) and scoring recordings
with the loaded model, on the tiny random model."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from emo_assets.lib.model.engine import EmotionModel, inference_dtype
from emo_assets.lib.model.loading import LazyEmotionModel, describe_model, label_order, load_model
from emo_assets.lib.model.model_dir import EMOTION_TOKENS, ModelLoadError
from emo_assets.lib.model.scorer import ArrayReader, EmotionResult, EmotionScorer
from emo_assets.lib.model.settings import ModelSettings, cpu_threads
from emo_assets.lib.model.windows import min_samples, num_frames
from emo_assets.lib.schemas import EMOTION_LABELS

REAL_SPEC = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
# Lengths in samples: at the minimum, just above it, odd, 0.5 s, 1 s, 2.5 s.
CLIP_LENGTHS = (400, 401, 1234, 8_000, 16_000, 40_000)


def _clip(n: int, seed: int, amplitude: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16_000
    tone = np.sin(2 * np.pi * (120 + 40 * seed) * t)
    return (amplitude * (tone + 0.3 * rng.standard_normal(n))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> EmotionModel:
    return load_model(ModelSettings(str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def funasr_reference(tiny_model_dir: Path):
    from funasr import AutoModel

    return AutoModel(model=str(tiny_model_dir), hub="ms", device="cpu", disable_update=True, disable_pbar=True)


# ---- loading ---------------------------------------------------------------------------------


def test_loads_the_tiny_model(tiny_model: EmotionModel) -> None:
    assert tiny_model.model_id == "random-tiny-seed0"
    assert tiny_model.is_random is True
    assert tiny_model.embed_dim == 32
    assert tiny_model.min_samples == 400
    assert tiny_model.labels == EMOTION_LABELS
    assert (tiny_model.device, tiny_model.dtype) == ("cpu", torch.float32)
    assert not tiny_model.module.training
    assert tiny_model.settings.threads == cpu_threads()


def test_model_id_is_the_directory_name_without_a_marker(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "emotion2vec_plus_large"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "emo_model.json").unlink()
    model = load_model(ModelSettings(str(model_dir), device="cpu"))
    assert (model.model_id, model.is_random) == ("emotion2vec_plus_large", False)


def test_loading_leaves_the_global_rngs_alone(tiny_model_dir: Path) -> None:
    np.random.seed(5)
    torch.manual_seed(5)
    expected = (np.random.rand(), torch.rand(1).item())
    np.random.seed(5)
    torch.manual_seed(5)
    load_model(ModelSettings(str(tiny_model_dir), device="cpu"))
    assert (np.random.rand(), torch.rand(1).item()) == expected


def test_loading_a_model_does_not_import_torch_dynamo(tiny_model_dir: Path) -> None:
    """A network built on the meta device skips torch.nn.init, whose meta kernels import torch._dynamo
    (about 2 s of every `emo analyze`); the initialisers are back in place afterwards."""
    import subprocess
    import sys

    code = (
        "import sys, torch.nn.init as init\n"
        "before = init.kaiming_normal_\n"
        "from emo_assets.lib.model.loading import load_model\n"
        "from emo_assets.lib.model.settings import ModelSettings\n"
        f"load_model(ModelSettings({str(tiny_model_dir)!r}, device='cpu'))\n"
        "print('torch._dynamo' in sys.modules, init.kaiming_normal_ is before)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_weights_that_do_not_match_the_config_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    # funasr would print "miss key in ckpt" and silently keep a random projection head.
    model_dir = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, model_dir)
    weights = torch.load(model_dir / "model.pt", weights_only=True)
    del weights["proj.weight"]
    torch.save(weights, model_dir / "model.pt")
    with pytest.raises(ModelLoadError, match="proj.weight missing from model.pt"):
        load_model(ModelSettings(str(model_dir), device="cpu"))


def test_weights_of_another_shape_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    # funasr skips a shape mismatch with a log line and keeps the random tensor.
    model_dir = tmp_path / "reshaped"
    shutil.copytree(tiny_model_dir, model_dir)
    weights = torch.load(model_dir / "model.pt", weights_only=True)
    weights["proj.weight"] = torch.zeros(9, 16)
    torch.save(weights, model_dir / "model.pt")
    with pytest.raises(ModelLoadError, match=r"proj.weight has shape \(9, 16\), config needs"):
        load_model(ModelSettings(str(model_dir), device="cpu"))


def test_ddp_prefixed_weights_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "ddp"
    shutil.copytree(tiny_model_dir, model_dir)
    weights = torch.load(model_dir / "model.pt", weights_only=True)
    torch.save({f"module.{k}": v for k, v in weights.items()}, model_dir / "model.pt")
    clip = _clip(8_000, seed=4)
    (expected,) = load_model(ModelSettings(str(tiny_model_dir), device="cpu")).infer([clip])
    (result,) = load_model(ModelSettings(str(model_dir), device="cpu")).infer([clip])
    np.testing.assert_array_equal(result.scores, expected.scores)


def test_corrupt_weights_file_is_a_model_load_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="EMO_MODEL"):
        load_model(ModelSettings(str(model_dir), device="cpu"))


def test_missing_directory_names_the_setting_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelSettings(str(tmp_path / "nowhere"), device="cpu"))
    message = str(err.value)
    assert "EMO_MODEL" in message and "nowhere" in message
    assert "emo make-test-model" in message


def test_directory_without_weights_lists_what_is_missing(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "no_weights"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "model.pt").unlink()
    with pytest.raises(ModelLoadError, match=r"EMO_MODEL=.* is missing model\.pt"):
        load_model(ModelSettings(str(model_dir), device="cpu"))


def test_broken_config_yaml_reports_the_yaml_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "config.yaml").write_text("model: Emotion2vec\nmodel_conf: [unclosed\n")
    with pytest.raises(ModelLoadError, match="config.yaml is not valid YAML"):
        load_model(ModelSettings(str(model_dir), device="cpu"))


def test_unknown_hub_names_emo_model_hub() -> None:
    with pytest.raises(ModelLoadError, match=r"EMO_MODEL_HUB='gitlab'.*ms .*hf"):
        load_model(ModelSettings("iic/emotion2vec_plus_large", hub="gitlab", device="cpu"))


def test_hub_id_offline_fails_fast_with_the_remedies(monkeypatch, tmp_path: Path) -> None:
    # Forced offline (empty cache, no route to the hub) so this never downloads or waits on retries.
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope"))
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelSettings("iic/emotion2vec_plus_large", hub="ms", device="cpu"))
    message = str(err.value)
    assert "Connect to the network once" in message
    assert "EMO_MODEL" in message
    assert "emo make-test-model DIR --size tiny" in message


def test_half_precision_on_cpu_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"half precision \(EMO_HALF\) needs a CUDA device.*EMO_HALF=0"):
        load_model(ModelSettings(str(tiny_model_dir), device="cpu", half=True))


@pytest.mark.parametrize(
    ("device", "half", "dtype"),
    [("cpu", False, torch.float32), ("cuda", False, torch.float32), ("cuda", True, torch.float16),
     ("cuda:1", True, torch.float16)],
)  # fmt: skip
def test_inference_dtype(device: str, half: bool, dtype: torch.dtype) -> None:
    assert inference_dtype(device, half) == dtype


def test_wrong_device_string_fails_before_loading(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="EMO_DEVICE='gpu0'"):
        load_model(ModelSettings(str(tiny_model_dir), device="gpu0"))


# ---- described first, loaded on first use ------------------------------------------------------


def test_describe_reads_the_model_files(tiny_model_dir):
    description = describe_model(ModelSettings(str(tiny_model_dir), device="cpu"))
    loaded = load_model(ModelSettings(str(tiny_model_dir), device="cpu"))
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
        describe_model(ModelSettings(str(tiny_model_dir), **settings))


def test_a_config_that_is_not_emotion2vec_is_refused(tmp_path, tiny_model_dir):
    for name in ("model.pt", "tokens.txt"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    (tmp_path / "config.yaml").write_text("model: Emotion2vec\nmodel_conf: {embed_dim: 8}\n")
    with pytest.raises(ModelLoadError, match="does not describe an emotion2vec model"):
        describe_model(ModelSettings(str(tmp_path), device="cpu"))


def test_weights_load_once_and_only_when_inference_runs(tiny_model_dir):
    calls = []

    def load():
        calls.append(1)
        return load_model(ModelSettings(str(tiny_model_dir), device="cpu"))

    lazy = LazyEmotionModel(describe_model(ModelSettings(str(tiny_model_dir), device="cpu")), load)
    assert (lazy.model_id, lazy.embed_dim) == ("random-tiny-seed0", 32)
    assert calls == []
    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    [result] = lazy.infer([wave])
    lazy.infer([wave])
    assert calls == [1]
    assert result.scores.sum() == pytest.approx(1.0, abs=1e-5)


def test_the_lazy_and_the_loaded_model_are_the_same_scorer(tiny_model_dir, tiny_model):
    lazy = LazyEmotionModel(describe_model(ModelSettings(str(tiny_model_dir), device="cpu")), lambda: tiny_model)
    assert isinstance(lazy, EmotionScorer) and isinstance(tiny_model, EmotionScorer)
    assert lazy.settings == tiny_model.settings and lazy.settings.device == "cpu"
    wave = _clip(20_000, seed=6)
    [ours] = lazy.score([ArrayReader(wave)])
    np.testing.assert_array_equal(ours.scores, tiny_model.infer([wave])[0].scores)
    np.testing.assert_array_equal(lazy.infer_frames(wave).embeddings, tiny_model.infer_frames(wave).embeddings)


# ---- inference -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", CLIP_LENGTHS)
def test_infer_matches_funasr_generate(tiny_model: EmotionModel, funasr_reference, n: int) -> None:
    clip = _clip(n, seed=n % 7)
    (ours,) = tiny_model.infer([clip])
    (theirs,) = funasr_reference.generate(input=clip, granularity="utterance", extract_embedding=True)

    funasr_scores = dict(zip(theirs["labels"], theirs["scores"]))
    by_label = np.array([funasr_scores[token] for token in EMOTION_TOKENS], dtype=np.float32)
    assert np.abs(ours.embedding - theirs["feats"]).max() <= 1e-4
    assert np.abs(ours.scores - by_label).max() <= 1e-5
    assert ours.emotion == EMOTION_LABELS[int(np.argmax(by_label))]


def test_results_are_one_per_clip_in_order(tiny_model: EmotionModel) -> None:
    clips = [_clip(n, seed=i, amplitude=0.05 * (i + 1)) for i, n in enumerate(CLIP_LENGTHS)]
    results = tiny_model.infer(clips)
    assert len(results) == len(clips)
    for clip, result in zip(clips, results):
        assert result.embedding.dtype == np.float32 and result.embedding.shape == (tiny_model.embed_dim,)
        assert result.scores.dtype == np.float32 and result.scores.shape == (len(EMOTION_LABELS),)
        assert result.scores.sum() == pytest.approx(1.0, abs=1e-5)
        assert result.confidence == pytest.approx(result.scores.max())
        (alone,) = tiny_model.infer([clip])
        # batched and alone differ only by float rounding (threads split the work differently)
        np.testing.assert_allclose(alone.scores, result.scores, atol=1e-6)
        np.testing.assert_allclose(alone.embedding, result.embedding, atol=1e-5)
    assert tiny_model.infer([]) == []


def test_infer_frames_gives_50_frames_per_second(tiny_model: EmotionModel) -> None:
    clip = _clip(32_000, seed=3)
    frames = tiny_model.infer_frames(clip)
    features, scores = frames.embeddings, frames.scores
    assert features.shape == (99, tiny_model.embed_dim)  # 2 s
    assert scores.shape == (99, len(EMOTION_LABELS))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    (utterance,) = tiny_model.infer([clip])
    np.testing.assert_allclose(features.mean(axis=0), utterance.embedding, atol=1e-5)


def test_infer_frames_matches_funasr_frame_granularity(tiny_model: EmotionModel, funasr_reference) -> None:
    clip = _clip(16_000, seed=2)
    features = tiny_model.infer_frames(clip).embeddings
    (theirs,) = funasr_reference.generate(input=clip, granularity="frame", extract_embedding=True)
    assert features.shape == theirs["feats"].shape == (49, tiny_model.embed_dim)
    assert np.abs(features - theirs["feats"]).max() <= 1e-4


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        (np.zeros(399, np.float32), "399 samples .* at least 400 samples"),
        (np.array([0.1] * 500 + [np.nan], np.float32), "NaN or infinite"),
        (np.array([0.1] * 500 + [np.inf], np.float32), "NaN or infinite"),
        (np.zeros((2, 800), np.float32), "1-D array"),
        (np.zeros(800, np.int16), "dtype int16"),
    ],
)
def test_bad_waveforms_raise_value_error(tiny_model: EmotionModel, clip: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_model.infer([_clip(800, seed=1), clip])
    with pytest.raises(ValueError, match=message):
        tiny_model.infer_frames(clip)


def test_silence_at_the_minimum_length_is_scored(tiny_model: EmotionModel) -> None:
    (result,) = tiny_model.infer([np.zeros(400, np.float32)])
    assert np.isfinite(result.embedding).all()
    assert result.scores.sum() == pytest.approx(1.0, abs=1e-5)


# ---- pure helpers ----------------------------------------------------------------------------


def test_emotion_result_properties() -> None:
    scores = np.array([0.1, 0, 0, 0.6, 0.3, 0, 0, 0, 0], np.float32)
    result = EmotionResult(embedding=np.zeros(4, np.float32), scores=scores)
    assert result.emotion == "happy"
    assert result.confidence == pytest.approx(0.6)


def test_label_order_of_the_real_tokens() -> None:
    assert label_order(EMOTION_TOKENS) == tuple(range(9))


def test_label_order_follows_the_token_file_not_position() -> None:
    tokens = ["unuse_0", "<unk>", "吃惊/surprised", "难过/sad", "其他/other", "中立/neutral",
              "开心/happy", "恐惧/fearful", "厌恶/disgusted", "生气/angry"]  # fmt: skip
    assert label_order(tokens) == (9, 8, 7, 6, 5, 4, 3, 2, 1)


@pytest.mark.parametrize(
    "tokens",
    [list(EMOTION_TOKENS[:-1]), list(EMOTION_TOKENS) + ["笑/laughing"], ["a", "b"]],
)
def test_label_order_refuses_other_label_sets(tokens: list[str]) -> None:
    with pytest.raises(ModelLoadError, match="9 emotion2vec\\+ classes"):
        label_order(tokens)


def test_min_samples_and_frames_of_the_real_extractor() -> None:
    assert min_samples(REAL_SPEC) == 400
    assert num_frames(399, REAL_SPEC) == 0
    assert num_frames(400, REAL_SPEC) == 1
    assert num_frames(16_000, REAL_SPEC) == 49
    assert num_frames(160_000, REAL_SPEC) == 499


@given(st.lists(st.tuples(st.just(8), st.integers(1, 12), st.integers(1, 6)), min_size=1, max_size=7))
def test_min_samples_is_the_shortest_input_with_a_frame(spec: list[tuple[int, int, int]]) -> None:
    shortest = min_samples(spec)
    assert num_frames(shortest, spec) == 1
    assert num_frames(shortest - 1, spec) == 0
