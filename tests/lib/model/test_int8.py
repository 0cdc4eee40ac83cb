"""The int8 network and its cache beside the model (lib/model/int8.py), on the tiny random model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from emo_assets.lib.model import int8, loading
from emo_assets.lib.model.engine import EmotionModel
from emo_assets.lib.model.loading import build_module, label_order, load_model
from emo_assets.lib.model.model_dir import make_test_model
from emo_assets.lib.model.settings import ModelSettings

INT8_LOG = "emo_assets.lib.model.int8"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A tiny model of this test's own: its cache starts empty and may be damaged."""
    return make_test_model(tmp_path / "tiny", size="tiny", seed=0)


def _clips():
    rng = np.random.default_rng(7)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 40000, 8000)]


def _outputs(model) -> list[tuple[np.ndarray, np.ndarray]]:
    clips = _clips()
    frames = model.infer_frames(clips[1])
    return [(r.embedding, r.scores) for r in model.infer(clips)] + [(frames.embeddings, frames.scores)]


def _uncached_int8(model_dir: Path):
    """int8 quantised in this process from the float network: no cache read or written."""
    module, tokens = build_module(model_dir)
    settings = ModelSettings(model=str(model_dir), device="cpu", precision="int8")
    return EmotionModel(module.eval(), settings, token_index=label_order(tokens))


def _load_int8(model_dir: Path):
    return load_model(ModelSettings(model=str(model_dir), device="cpu", precision="int8"))


def _assert_bit_equal(a, b) -> None:
    assert len(a) == len(b)
    for (emb_a, scores_a), (emb_b, scores_b) in zip(a, b, strict=True):
        assert emb_a.dtype == emb_b.dtype and np.array_equal(emb_a, emb_b)
        assert np.array_equal(scores_a, scores_b)


def _cache_files(model_dir: Path) -> list[Path]:
    return sorted((model_dir / int8.CACHE_FOLDER).glob("int8-*.pt"))


def _no_float_weights(monkeypatch) -> None:
    """Reading model.pt's float weights fails from here on: a start that needs them is a miss."""

    def refuse(*args, **kwargs):
        raise AssertionError("model.pt was read: the int8 cache was not used")

    monkeypatch.setattr(loading, "load_weights", refuse)


def test_cached_int8_outputs_equal_quantising_at_start_to_the_bit(model_dir, monkeypatch, caplog):
    fp32 = _outputs(load_model(ModelSettings(model=str(model_dir), device="cpu", precision="fp32")))
    uncached = _outputs(_uncached_int8(model_dir))
    assert not np.array_equal(fp32[0][0], uncached[0][0])  # int8 differs from fp32: the test can tell them apart
    assert _cache_files(model_dir) == []  # quantising in process writes nothing
    with caplog.at_level(logging.INFO, logger=INT8_LOG):
        first = _outputs(_load_int8(model_dir))  # a miss: quantised, then cached
    (cached,) = _cache_files(model_dir)
    assert "quantised and cached" in caplog.text
    manifest = json.loads(cached.with_suffix(".json").read_text())
    assert manifest["precision"] == "int8" and set(manifest["files"]) == {"config.yaml", "model.pt", "tokens.txt"}
    _no_float_weights(monkeypatch)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=INT8_LOG):
        second = _outputs(_load_int8(model_dir))  # a hit: model.pt is not read
    assert "read from the cache" in caplog.text
    _assert_bit_equal(first, uncached)
    _assert_bit_equal(second, uncached)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip_a_byte, "sha256"),
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "sha256"),
        (lambda p: p.with_suffix(".json").unlink(), "manifest"),
        (lambda p: p.with_suffix(".json").write_text("{not json"), "manifest"),
    ],
    ids=["flipped-byte", "truncated", "no-manifest", "bad-manifest"],
)
def test_a_corrupt_cache_is_logged_and_rebuilt_never_used(model_dir, caplog, damage, reason):
    uncached = _outputs(_uncached_int8(model_dir))
    _load_int8(model_dir)
    (cached,) = _cache_files(model_dir)
    damage(cached)
    with caplog.at_level(logging.INFO, logger=INT8_LOG):
        rebuilt = _outputs(_load_int8(model_dir))
    corrupt = [r for r in caplog.records if "is corrupt" in r.getMessage()]
    assert len(corrupt) == 1 and corrupt[0].levelno == logging.WARNING and reason in corrupt[0].getMessage()
    assert str(cached) in corrupt[0].getMessage()
    _assert_bit_equal(rebuilt, uncached)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=INT8_LOG):
        _load_int8(model_dir)  # the rewritten file is whole again
    assert "read from the cache" in caplog.text and "is corrupt" not in caplog.text


def test_a_cache_file_that_does_not_fit_the_network_is_rebuilt(model_dir, caplog):
    """A file whose checksum matches but whose tensors are not this network's (e.g. written by
    another version of the code under the same key) fails to load into it: corrupt, rebuilt."""
    import torch

    _load_int8(model_dir)
    (cached,) = _cache_files(model_dir)
    torch.save({"module": {"nothing": torch.zeros(1)}, "conv_gemms": None}, cached)
    manifest_path = cached.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = int8.hashlib.sha256(cached.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger=INT8_LOG):
        rebuilt = _outputs(_load_int8(model_dir))
    assert "does not load into the network" in caplog.text
    _assert_bit_equal(rebuilt, _outputs(_uncached_int8(model_dir)))


def test_a_changed_model_never_uses_the_old_cache(model_dir, monkeypatch):
    old = _outputs(_load_int8(model_dir))
    (old_file,) = _cache_files(model_dir)
    make_test_model(model_dir, size="tiny", seed=1)  # new weights in the same folder
    new = _outputs(_load_int8(model_dir))
    assert not np.array_equal(new[0][0], old[0][0])
    _assert_bit_equal(new, _outputs(_uncached_int8(model_dir)))
    assert len(_cache_files(model_dir)) == 2 and old_file in _cache_files(model_dir)


def test_a_changed_torch_version_or_format_is_another_key(model_dir, monkeypatch):
    folder = int8.cache_dir(model_dir)
    key, parts = int8.cache_key(model_dir, folder)
    assert parts["torch"] == int8.torch.__version__
    monkeypatch.setattr(int8.torch, "__version__", "0.0.0-other")
    other_torch, _ = int8.cache_key(model_dir, folder)
    monkeypatch.undo()
    monkeypatch.setattr(int8, "CACHE_FORMAT", int8.CACHE_FORMAT + 1)
    other_format, _ = int8.cache_key(model_dir, folder)
    assert len({key, other_torch, other_format}) == 3


def test_the_model_hash_is_remembered_until_the_file_changes(model_dir, monkeypatch):
    memo = model_dir / int8.CACHE_FOLDER / "hashes.json"
    weights = model_dir / "model.pt"
    first = int8.file_sha256(weights, memo)
    assert first == int8.hashlib.sha256(weights.read_bytes()).hexdigest()
    reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        reads.append(Path(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert int8.file_sha256(weights, memo) == first
    assert weights not in reads  # remembered: not read again
    weights.write_bytes(weights.read_bytes() + b"\0")  # any write changes its size or change time
    changed = int8.file_sha256(weights, memo)
    assert weights in reads and changed != first


def test_a_read_only_model_folder_caches_in_the_user_cache(model_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_access = int8.os.access
    monkeypatch.setattr(int8.os, "access", lambda p, mode: False if Path(p) == model_dir else real_access(p, mode))
    assert int8.cache_dir(model_dir) == tmp_path / "xdg" / "emo-assets"
    first = _outputs(_load_int8(model_dir))
    assert not (model_dir / int8.CACHE_FOLDER).exists()
    assert len(list((tmp_path / "xdg" / "emo-assets").glob("int8-*.pt"))) == 1
    with caplog.at_level(logging.INFO, logger=INT8_LOG):
        _assert_bit_equal(_outputs(_load_int8(model_dir)), first)
    assert "read from the cache" in caplog.text
