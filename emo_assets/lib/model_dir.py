"""Random-weight emotion2vec+ model directories that funasr loads offline.

`make_test_model` writes the same files a ModelScope emotion2vec+ download has (`config.yaml`,
`model.pt`, `tokens.txt`, `configuration.json`) plus `emo_model.json`, which marks the weights as
random. The network is funasr's own `Emotion2vec` class, so tests, demos and benchmarks run the real
code path without the 1.2 GB download. Outputs of a random model are meaningless.

Sizes (everything else comes from funasr's template, `emotion2vec_template.yaml`):

- ``tiny``:  32-d, 2 heads, prenet 1 + 2 blocks, 32-channel conv extractor. Same conv kernels and
  strides as the real models, so the same 50 Hz frame rate and the same 400-sample minimum input.
- ``base``:  the template: 768-d, 12 heads, prenet 4 + 8 blocks (emotion2vec+ base architecture).
- ``large``: 1024-d, 16 heads, 24 blocks (depth 24, model_depth 24, num_alibi_heads 16) and no
  prenet blocks; see `_SIZE_OVERRIDES` for why.

The decoder (used only in pre-training) is built from the config but its weights are left out of
`model.pt`, exactly like the published checkpoints; funasr prints "miss key in ckpt" for them.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

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

# Weights missing from published checkpoints; not used at inference.
DECODER_PREFIX = "modality_encoders.AUDIO.decoder."

_TEMPLATE = "emotion2vec_template.yaml"

# Overrides of the template per size: model_conf keys, and modalities.audio keys under "audio".
_SIZE_OVERRIDES: dict[str, dict[str, Any]] = {
    "base": {},
    # Real large: 24 transformer blocks of 1024-d / 16 heads. The published ~300M parameter count
    # fits 24 blocks in total (24 x 12.6M + conv extractor), so no extra prenet blocks on top; the
    # exact prenet split of the real checkpoint could not be checked offline (compute is the same
    # either way: 24 blocks of the same size).
    "large": {
        "depth": 24,
        "embed_dim": 1024,
        "num_heads": 16,
        "average_top_k_layers": 24,
        "audio": {"num_alibi_heads": 16, "model_depth": 24, "prenet_depth": 0},
    },
    "tiny": {
        "depth": 2,
        "embed_dim": 32,
        "num_heads": 2,
        "average_top_k_layers": 2,
        "audio": {
            "num_alibi_heads": 2,
            "model_depth": 2,
            "prenet_depth": 1,
            # Same kernels and strides as the real spec, 32 channels instead of 512.
            "feature_encoder_spec": (
                "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] + [(32, 2, 2)]"
            ),
            "conv_pos_width": 19,
            "conv_pos_depth": 1,
            "conv_pos_groups": 16,
            "decoder": {"decoder_dim": 16, "decoder_groups": 16, "decoder_layers": 1},
        },
    },
}


def model_config(size: str = "tiny") -> dict[str, Any]:
    """The `config.yaml` content of a test model of `size` (tiny, base or large)."""
    if size not in _SIZE_OVERRIDES:
        raise ValueError(f"unknown test model size {size!r}; choose one of {TEST_MODEL_SIZES}")
    template_text = resources.files("emo_assets.lib").joinpath(_TEMPLATE).read_text("utf-8")
    template = yaml.safe_load(template_text)
    model_conf = copy.deepcopy(template["model_conf"])
    overrides = copy.deepcopy(_SIZE_OVERRIDES[size])
    audio_overrides = overrides.pop("audio", {})
    decoder_overrides = audio_overrides.pop("decoder", {})
    model_conf.update(overrides)
    model_conf["modalities"]["audio"].update(audio_overrides)
    model_conf["modalities"]["audio"]["decoder"].update(decoder_overrides)
    return {
        "model": template["model"],
        "model_conf": model_conf,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
    }


def make_test_model(out_dir: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight emotion2vec+ model directory funasr's AutoModel loads offline.

    Deterministic: the same size and seed give the same weights. Existing model files in
    `out_dir` are replaced (each file is written to a temporary name, then renamed).
    """
    import torch
    from funasr.models.emotion2vec.model import Emotion2vec

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

    _write_atomic(out_dir / "model.pt", lambda path: torch.save(state, path))
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
    _write_text(out_dir / "emo_model.json", json.dumps(marker, indent=2) + "\n")
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
    return yaml.dump(
        data, Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, width=1000
    )


def _write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
