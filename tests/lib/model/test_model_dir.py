"""Random-weight test model directories: files, determinism and the sizes' architectures."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml

from emo_assets.lib.model.model_dir import (
    DECODER_PREFIX,
    EMOTION_TOKENS,
    TEST_MODEL_SIZES,
    _dump_yaml,
    make_test_model,
    model_config,
)
from emo_assets.lib.model.windows import min_samples


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)


def _meta_module(size: str):
    """The funasr network of `size`, built without memory (shapes only)."""
    from funasr.models.emotion2vec.model import Emotion2vec

    with torch.device("meta"):
        return Emotion2vec(model_conf=model_config(size)["model_conf"], vocab_size=len(EMOTION_TOKENS))


def test_writes_the_files_a_hub_download_has(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert names == {
        "config.yaml",
        "model.pt",
        "tokens.txt",
        "configuration.json",
        "emo_model.json",
    }

    tokens = (tiny_model_dir / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert tokens == [
        "生气/angry", "厌恶/disgusted", "恐惧/fearful", "开心/happy", "中立/neutral",
        "其他/other", "难过/sad", "吃惊/surprised", "<unk>",
    ]  # fmt: skip

    configuration = json.loads((tiny_model_dir / "configuration.json").read_text())
    assert configuration["file_path_metas"] == {
        "init_param": "model.pt",
        "config": "config.yaml",
        "tokenizer_conf": {"token_list": "tokens.txt"},
    }
    marker = json.loads((tiny_model_dir / "emo_model.json").read_text())
    assert marker == {
        "model_id": "random-tiny-seed0",
        "random_weights": True,
        "size": "tiny",
        "seed": 0,
    }


def test_config_yaml_round_trips_with_real_floats(tiny_model_dir: Path) -> None:
    text = (tiny_model_dir / "config.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    assert config == model_config("tiny")
    assert "norm_eps: 0.00001" in text
    assert config["model_conf"]["norm_eps"] == pytest.approx(1e-5)
    assert config["tokenizer"] == "CharTokenizer"
    assert config["tokenizer_conf"] == {"unk_symbol": "<unk>", "split_with_space": True}


def test_same_seed_same_weights_other_seed_differs(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = _weights(tiny_model_dir)
    again = _weights(make_test_model(tmp_path / "again", size="tiny", seed=0))
    other = _weights(make_test_model(tmp_path / "other", size="tiny", seed=1))

    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["proj.weight"], other["proj.weight"])
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], other["blocks.0.attn.qkv.weight"])


def test_building_does_not_touch_the_global_rng(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_test_model(tmp_path / "m", size="tiny", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_decoder_weights_are_left_out_like_published_checkpoints(tiny_model_dir: Path) -> None:
    weights = _weights(tiny_model_dir)
    assert not any(k.startswith(DECODER_PREFIX) for k in weights)
    assert weights["proj.weight"].shape == (9, 32)


def _inference_params(module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith(DECODER_PREFIX))


def test_large_is_the_published_emotion2vec_plus_large_config() -> None:
    published = yaml.safe_load(
        resources.files("emo_assets.lib.model").joinpath("emotion2vec_plus_large_config.yaml").read_text("utf-8")
    )
    config = model_config("large")
    assert config == published  # verbatim: nothing added, nothing overridden
    conf = config["model_conf"]
    audio = conf["modalities"]["audio"]
    assert (conf["embed_dim"], conf["num_heads"], conf["depth"], conf["norm_eps"]) == (1024, 16, 8, 1e-5)
    assert (audio["prenet_depth"], audio["num_extra_tokens"], audio["num_alibi_heads"]) == (4, 10, 16)
    assert (audio["conv_pos_depth"], audio["conv_pos_width"], audio["conv_pos_groups"]) == (5, 95, 16)
    assert config["tokenizer"] == "CharTokenizer"
    assert yaml.safe_load(_dump_yaml(config)) == config  # what make_test_model writes reads back the same


def test_large_builds_the_real_large_network() -> None:
    module = _meta_module("large")
    enc = module.modality_encoders["AUDIO"]
    assert len(enc.context_encoder.blocks) == 4 and len(module.blocks) == 8
    assert module.blocks[0].attn.num_heads == 16
    assert module.blocks[0].attn.qkv.weight.shape == (3 * 1024, 1024)
    assert enc.extra_tokens.shape == (1, 10, 1024)
    assert enc.alibi_scale.shape == (1, 1, 16, 1, 1)
    pos_convs = [m for m in enc.relative_positional_encoder.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.kernel_size, c.groups) for c in pos_convs] == [((19,), 16)] * 5  # width 95 over 5 layers
    assert [c[0].out_channels for c in enc.local_encoder.conv_layers] == [512] * 7
    assert module.proj.weight.shape == (9, 1024)
    # emotion2vec+ large runs 162 M parameters (model.pt holds more than the network that runs)
    assert 161.5e6 < _inference_params(module) < 162.5e6


def test_base_is_the_template() -> None:
    conf = model_config("base")["model_conf"]
    assert (conf["depth"], conf["embed_dim"], conf["num_heads"]) == (8, 768, 12)
    assert conf["modalities"]["audio"]["prenet_depth"] == 4
    assert 92e6 < _inference_params(_meta_module("base")) < 94e6


@pytest.mark.parametrize(("size", "prenet", "blocks"), [("tiny", 1, 2), ("base", 4, 8), ("large", 4, 8)])
def test_every_size_has_prenet_blocks_and_extra_tokens(size: str, prenet: int, blocks: int) -> None:
    """Like the real models, so the parity tests on any size run every path of the forward."""
    module = _meta_module(size)
    enc = module.modality_encoders["AUDIO"]
    assert (len(enc.context_encoder.blocks), len(module.blocks)) == (prenet, blocks)
    assert enc.extra_tokens is not None and enc.extra_tokens.shape[1] == 10


def test_tiny_extra_tokens_are_random_not_zero(tiny_model_dir: Path) -> None:
    tokens = _weights(tiny_model_dir)["modality_encoders.AUDIO.extra_tokens"]
    assert tokens.shape == (1, 10, 32)
    assert torch.equal(tokens[:, 0], torch.zeros(1, 32))  # funasr: the first one starts at zero
    assert tokens[:, 1:].abs().min() > 0 and tokens[:, 1:].std() > 0.5


@pytest.mark.parametrize("size", TEST_MODEL_SIZES)
def test_every_size_keeps_the_real_frame_rate_and_minimum_input(size: str) -> None:
    layers = _meta_module(size).modality_encoders["AUDIO"].feature_enc_layers
    assert [(k, s) for _, k, s in layers] == [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
    assert min_samples(layers) == 400


def test_unknown_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny"):
        make_test_model(tmp_path / "m", size="huge")


def test_checkpoint_keys_are_mapped_by_the_configs_scope_map(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Like funasr's loader: the published plus_large config maps `d2v_model.` keys onto the network."""
    import shutil

    from emo_assets.lib.model.loading import load_model
    from emo_assets.lib.model.model_dir import ModelLoadError
    from emo_assets.lib.model.settings import ModelSettings

    model_dir = tmp_path / "prefixed"
    shutil.copytree(tiny_model_dir, model_dir)
    plain = _weights(tiny_model_dir)
    torch.save({f"d2v_model.{k}": v for k, v in plain.items()}, model_dir / "model.pt")
    with pytest.raises(ModelLoadError, match="extra_tokens missing from model.pt"):  # no scope_map: no key found
        load_model(ModelSettings(model=str(model_dir), device="cpu"))

    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    config["scope_map"] = model_config("large")["scope_map"]
    assert config["scope_map"] == ["d2v_model.", "none"]
    (model_dir / "config.yaml").write_text(_dump_yaml(config), encoding="utf-8")
    loaded = load_model(ModelSettings(model=str(model_dir), device="cpu")).module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in plain.items())
