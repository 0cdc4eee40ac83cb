"""emotion2vec+ model directories: build random-weight ones, find and check real ones.

`resolve_model_dir` turns the EMO_MODEL setting (hub id or local path) into a local directory,
offline-first (hub cache, then a quick reachability probe, then funasr's download); `read_config`,
`read_marker` and `load_weights` check what is in it.

`make_test_model` writes the same files a ModelScope emotion2vec+ download has (`config.yaml`,
`model.pt`, `tokens.txt`, `configuration.json`) plus `emo_model.json`, which marks the weights as
random. The network is funasr's own `Emotion2vec` class, so tests, demos and benchmarks run the real
code path without the 1.95 GB download of the large model. Outputs of a random model are meaningless.

Sizes (parameters run at inference, decoder left out):

- ``tiny``:  32-d, 2 heads, prenet 1 + 2 blocks, 10 extra tokens, 32-channel conv extractor (58 k).
  Same conv kernels and strides as the real models, so the same 50 Hz frame rate and the same
  400-sample minimum input; prenet blocks and extra tokens like the real models, so the parity tests
  run every path of the forward. funasr's template (`emotion2vec_template.yaml`) with overrides.
- ``base``:  funasr's template: 768-d, 12 heads, prenet 4 + 8 blocks, 10 extra tokens (93 M; the
  emotion2vec+ base architecture).
- ``large``: the published `config.yaml` of emotion2vec_plus_large, shipped verbatim as
  `emotion2vec_plus_large_config.yaml`: 1024-d, 16 heads, prenet 4 + 8 blocks, 10 extra tokens,
  positional convs 5 x width 19 (95 / 5) in 16 groups, 7 x 512-channel conv extractor (162 M).

The decoder (used only in pre-training) is built from the config but its weights are left out of
`model.pt`, exactly like the published checkpoints; funasr prints "miss key in ckpt" for them.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from emo_assets.lib.files.atomic import atomic_path

TEST_MODEL_SIZES = ("tiny", "base", "large")

# The tokens.txt of the emotion2vec+ models, in their order (the projection head's row order).
EMOTION_TOKENS = (
    "生气/angry",
    "厌恶/disgusted",
    "恐惧/fearful",
    "开心/happy",
    "中立/neutral",
    "其他/other",
    "难过/sad",
    "吃惊/surprised",
    "<unk>",
)

# Pre-training decoder: its weights are absent from published checkpoints; unused at inference.
DECODER_PREFIX = "modality_encoders.AUDIO.decoder."
HUBS = ("ms", "hf")
REQUIRED_FILES = ("config.yaml", "model.pt", "tokens.txt")
MARKER_FILE = "emo_model.json"
_HUB_ENDPOINTS = {
    "ms": ("MODELSCOPE_ENDPOINT", "https://modelscope.cn"),
    "hf": ("HF_ENDPOINT", "https://huggingface.co"),
}
_PROBE_TIMEOUT_S = 3.0
_MAKE_TEST_MODEL_HINT = (
    "or build a random test model with `emo make-test-model DIR --size tiny` and set EMO_MODEL=DIR "
    "(random weights: its outputs are meaningless)"
)

_TEMPLATE = "emotion2vec_template.yaml"
_PLUS_LARGE = "emotion2vec_plus_large_config.yaml"
_TOKENIZER = {"tokenizer": "CharTokenizer", "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True}}


class ModelLoadError(RuntimeError):
    """The emotion model cannot be loaded; the message says which setting to change."""


# Per size: the reference config it starts from, then overrides of model_conf keys (modalities.audio
# keys under "audio", its decoder's under "audio" -> "decoder"). Large has none: it is the published
# config as it is, so it cannot drift from the real model.
_SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "base": (_TEMPLATE, {}),
    "large": (_PLUS_LARGE, {}),
    "tiny": (
        _TEMPLATE,
        {
            "depth": 2,
            "embed_dim": 32,
            "num_heads": 2,
            "average_top_k_layers": 2,
            "audio": {
                "num_alibi_heads": 2,
                "model_depth": 2,
                "prenet_depth": 1,
                # Same kernels and strides as the real spec, 32 channels instead of 512.
                "feature_encoder_spec": ("[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] + [(32, 2, 2)]"),
                "conv_pos_width": 19,
                "conv_pos_depth": 1,
                "conv_pos_groups": 16,
                "decoder": {"decoder_dim": 16, "decoder_groups": 16, "decoder_layers": 1},
            },
        },
    ),
}


def model_config(size: str = "tiny") -> dict[str, Any]:
    """The `config.yaml` content of a test model of `size` (tiny, base or large)."""
    if size not in _SIZES:
        raise ValueError(f"unknown test model size {size!r}; choose one of {TEST_MODEL_SIZES}")
    source, size_overrides = _SIZES[size]
    config = yaml.safe_load(resources.files("emo_assets.lib.model").joinpath(source).read_text("utf-8"))
    overrides = copy.deepcopy(size_overrides)
    audio_overrides = overrides.pop("audio", {})
    decoder_overrides = audio_overrides.pop("decoder", {})
    model_conf = config["model_conf"]
    model_conf.update(overrides)
    model_conf["modalities"]["audio"].update(audio_overrides)
    model_conf["modalities"]["audio"]["decoder"].update(decoder_overrides)
    return {**config, **{key: copy.deepcopy(value) for key, value in _TOKENIZER.items() if key not in config}}


def make_test_model(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight emotion2vec+ model directory funasr's AutoModel loads offline.

    Deterministic: the same size and seed give the same weights. Existing model files in
    `out_dir` are replaced (each file is written to a temporary name, then renamed).
    """
    import torch

    from emo_assets.lib.model.funasr_import import funasr_class

    Emotion2vec = funasr_class("model_classes", "Emotion2vec")  # noqa: N806 - funasr's class
    config = model_config(size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        module = Emotion2vec(model_conf=config["model_conf"], vocab_size=len(EMOTION_TOKENS))
    finally:
        torch.random.set_rng_state(rng_state)
    state = {k: v for k, v in module.state_dict().items() if not k.startswith(DECODER_PREFIX)}

    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save(state, tmp)
    _write_text(out_dir / "config.yaml", _dump_yaml(config))
    _write_text(out_dir / "tokens.txt", "".join(f"{token}\n" for token in EMOTION_TOKENS))
    configuration = {
        "framework": "pytorch",
        "task": "emotion-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"token_list": "tokens.txt"},
        },
    }
    _write_text(out_dir / "configuration.json", json.dumps(configuration, indent=2) + "\n")
    marker = {
        "model_id": f"random-{size}-seed{seed}",
        "random_weights": True,
        "size": size,
        "seed": seed,
    }
    _write_text(out_dir / MARKER_FILE, json.dumps(marker, indent=2) + "\n")
    return out_dir


class _ConfigDumper(yaml.SafeDumper):
    """Writes floats in plain decimal: YAML 1.1 reads `1e-05` back as a string."""


def _represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
    text = repr(value)
    if "e" in text or "E" in text:
        text = f"{value:.12f}".rstrip("0")
        if text.endswith("."):
            text += "0"
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


_ConfigDumper.add_representer(float, _represent_float)


def _dump_yaml(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, width=1000)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ---- finding and checking model directories ---------------------------------------------------


def resolve_model_dir(model: str, hub: str) -> tuple[Path, str]:
    """(local model directory, model id) for a local path or a hub id."""
    if hub not in HUBS:
        raise ModelLoadError(
            f"EMO_MODEL_HUB={hub!r} is not a model hub; allowed values: ms (ModelScope), hf (Hugging Face)"
        )
    path = Path(model).expanduser()
    if path.exists() or path.is_absolute() or model.startswith((".", "~")):
        _check_local_dir(path)
        return path.resolve(), path.resolve().name
    return _hub_model_dir(model, hub), model


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise ModelLoadError(
            f"EMO_MODEL={str(path)!r} is not a directory. Point EMO_MODEL at a model directory "
            f"holding {', '.join(REQUIRED_FILES)}, or at a hub id such as "
            "iic/emotion2vec_plus_large, " + _MAKE_TEST_MODEL_HINT
        )
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"EMO_MODEL={str(path)!r} is missing {', '.join(missing)}; a model directory needs "
            f"{', '.join(REQUIRED_FILES)}. Re-download it (a hub id such as "
            "iic/emotion2vec_plus_large is cached on first use), " + _MAKE_TEST_MODEL_HINT
        )


def _hub_model_dir(model: str, hub: str) -> Path:
    """Local copy of a hub model: the hub cache if complete, else funasr's download."""
    from emo_assets.lib.model.funasr_import import funasr_module

    download_model = funasr_module("funasr.download.download_model_from_hub").download_model
    name_maps = funasr_module("funasr.download.name_maps_from_hub")
    name_maps_ms, name_maps_hf = name_maps.name_maps_ms, name_maps.name_maps_hf
    repo = (name_maps_ms if hub == "ms" else name_maps_hf).get(model, model)
    cached = _cached_snapshot(repo, hub)
    if cached is not None and _is_complete(cached):
        return cached
    offline = (
        f"EMO_MODEL={model!r} (hub {hub}) is not in the local cache and the hub cannot be reached. "
        "Connect to the network once to download it (it is cached afterwards), or point EMO_MODEL "
        "at a local model directory (e.g. a downloaded emotion2vec_plus_large), "
        + _MAKE_TEST_MODEL_HINT
        + f". If {model!r} was meant as a local directory: {Path(model).resolve()} does not exist."
    )
    if not _hub_reachable(hub):
        raise ModelLoadError(offline)
    resolved = Path(str(download_model(model=repo, hub=hub).get("model_path", repo)))
    if not _is_complete(resolved):
        raise ModelLoadError(
            f"downloading EMO_MODEL={model!r} from hub {hub} (repo {repo}) did not give a model "
            f"directory with {', '.join(REQUIRED_FILES)} (see the download message above). Check "
            "the id and EMO_MODEL_HUB, point EMO_MODEL at a local model directory, " + _MAKE_TEST_MODEL_HINT
        )
    return resolved


def _cached_snapshot(repo: str, hub: str) -> Path | None:
    """The hub's local snapshot of `repo`, without touching the network."""
    try:
        if hub == "ms":
            from modelscope.hub.snapshot_download import snapshot_download
        else:
            from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # any cache miss, whatever the library calls it
        return None


def _is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def _hub_reachable(hub: str) -> bool:
    """Quick TCP probe of the hub, so an offline machine fails in seconds, not after retries."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy may reach what a direct connection cannot: let the download try
    env, default = _HUB_ENDPOINTS[hub]
    url = urlparse(os.environ.get(env) or default)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def read_config(model_dir: Path) -> dict[str, Any]:
    """The parsed `config.yaml` of an emotion2vec model directory."""
    path = model_dir / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"{path} is not valid YAML ({exc}); re-download the model or point EMO_MODEL at another model directory"
        ) from exc
    if not isinstance(config, dict) or config.get("model") != "Emotion2vec":
        found = config.get("model") if isinstance(config, dict) else type(config).__name__
        raise ModelLoadError(
            f"{path} describes model {found!r}, not Emotion2vec; point EMO_MODEL at an "
            "emotion2vec+ model (e.g. iic/emotion2vec_plus_large)"
        )
    if not isinstance(config.get("model_conf"), dict):
        raise ModelLoadError(f"{path} has no model_conf section; re-download the model")
    return config


def read_marker(model_dir: Path) -> dict[str, Any]:
    """`emo_model.json` of a test model directory, or {} for a real model."""
    path = model_dir / MARKER_FILE
    if not path.is_file():
        return {}
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); rebuild the test model") from exc
    return marker if isinstance(marker, dict) else {}


def load_weights(module: Any, weights_path: Path, scope_map: Sequence[str] | None = None) -> None:
    """Assign ``weights_path``'s tensors to ``module`` (built on the meta device), checking that
    every one the config needs is there with its shape: no silent random init.

    The file is memory-mapped where its format allows (torch's zip format), so the weights exist
    once in memory. The pre-training decoder, absent from published checkpoints, is ignored.
    ``scope_map`` is the config's ``scope_map`` (pairs of checkpoint prefix, model prefix; the
    published emotion2vec_plus_large config maps ``d2v_model.`` to none), applied as funasr applies it.
    """
    import torch

    try:
        try:
            state = torch.load(weights_path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, truncated download, foreign pickle
        raise ModelLoadError(
            f"{weights_path} cannot be read as a torch state dict ({exc}); re-download the model "
            "or point EMO_MODEL at another model directory"
        ) from exc
    for key in ("state_dict", "model_state_dict", "model"):  # the wrappers funasr unwraps
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        state = {}
    expected = module.state_dict()
    weights, problems = {}, []
    pairs = _prefix_pairs(scope_map)
    for name, tensor in expected.items():
        stored = state.get(_source_key(name, state, pairs))
        if stored is None:
            problems.append(f"{name} missing from model.pt")
        elif tuple(stored.shape) != tuple(tensor.shape):
            problems.append(f"{name} has shape {tuple(stored.shape)}, config needs {tuple(tensor.shape)}")
        else:
            weights[name] = stored.to(tensor.dtype)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelLoadError(
            f"{weights_path} does not match its config.yaml, so the model would run partly random "
            f"weights ({shown}). Re-download the model or rebuild it with `emo make-test-model`."
        )
    module.load_state_dict(weights, strict=True, assign=True)


def _prefix_pairs(scope_map: Sequence[str] | None) -> list[tuple[str, str]]:
    """funasr's scope_map pairs, plus the DDP ``module.`` prefix funasr always adds; "none" is ""."""
    items = [*(scope_map or []), "module.", "None"]
    if len(items) % 2:
        raise ModelLoadError(f"scope_map {list(scope_map or [])} in config.yaml is not a list of prefix pairs")
    plain = ["" if str(item).lower() == "none" else str(item) for item in items]
    return list(zip(plain[::2], plain[1::2], strict=True))


def _source_key(name: str, state: dict, pairs: list[tuple[str, str]]) -> str:
    """The checkpoint key funasr's ``load_pretrained_model`` reads for model key ``name``
    (every pair is tried in order; the last one that matches wins, as there)."""
    source = name
    for src, dst in pairs:
        if dst == "" and src + name in state:
            source = src + name
        elif name.startswith(dst) and name.replace(dst, src, 1) in state:
            source = name.replace(dst, src, 1)
    return source
