"""int8: the network dynamically quantised for the CPU, and a cache of it beside the model.

:func:`quantise` makes the int8 network from the float one (a copy; the input is not changed):
torch.ao's dynamic int8 for every linear layer but the classification head (``proj``), and the conv
front end after its first layer as int8 GEMMs (:func:`~emo_assets.lib.model.masked_forward.conv_front_end_gemms`,
only for the ``layer_norm`` extractor that emotion2vec+ uses).

Quantising the 162 M network reads every float weight, computes each layer's scale and rounds it:
several seconds at every start. :func:`load_int8` keeps the result in a file and reads it back on
the next start instead, without reading the float weights at all:

* where: ``<model dir>/.emo-cache/`` when the model folder is writable, else ``~/.cache/emo-assets/``
  (``$XDG_CACHE_HOME/emo-assets``); clearing it is deleting that folder, it is rebuilt on the next start;
* keyed by the content (sha256) of the model's files (``config.yaml``, ``model.pt``, ``tokens.txt``),
  the torch and funasr versions, the precision and this module's format: a changed model, torch or
  quantisation rule never uses a stale file. A file's sha256 is remembered with its size, inode and
  change times (``hashes.json``, as git's index does), so an unchanged 2 GB ``model.pt`` is not re-read;
* written atomically (:mod:`emo_assets.lib.files.atomic`), with its own sha256 in a manifest beside it;
  a file that does not match its manifest, cannot be read or does not fit the network is logged as
  corrupt, rebuilt and rewritten, never used.

The cached network is the same tensors the quantiser made (int8 weights, scales, float layers), so
its outputs are identical to the bit. torch re-packs each int8 weight for its kernels when loading
it (fbgemm), which is part of what quantising costs: the cache saves the rest (BENCHMARKS.md).
No dagster here.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd

from emo_assets.lib.files.atomic import atomic_path, atomic_write
from emo_assets.lib.model.masked_forward import conv_front_end_gemms, quantize_int8

log = logging.getLogger(__name__)

# Bump when what quantise() makes changes (which layers, how): older cache files are then unused.
CACHE_FORMAT = 1
MODEL_FILES = ("config.yaml", "model.pt", "tokens.txt")
CACHE_FOLDER = ".emo-cache"


@dataclass(frozen=True)
class Int8Network:
    """The network with int8 linear layers, and the conv front end's int8 GEMMs (None: not used)."""

    module: nn.Module
    conv_gemms: nn.ModuleList | None


def int8_layer_names(module: nn.Module) -> set[str]:
    """The linear layers quantised: all but the classification head ``proj`` (its scores stay float)."""
    return {name for name, m in module.named_modules() if isinstance(m, nn.Linear) and name != "proj"}


def _uses_conv_gemms(module: nn.Module) -> bool:
    return module.modality_encoders["AUDIO"].modality_cfg.extractor_mode == "layer_norm"


def quantise(module: nn.Module) -> Int8Network:
    """The int8 network made from the float ``module`` (a copy: ``module`` is not changed)."""
    names = int8_layer_names(module)
    quantised = quantize_int8(copy.deepcopy(module).to("cpu", torch.float32).eval(), names)
    return Int8Network(quantised, conv_front_end_gemms(module) if _uses_conv_gemms(module) else None)


def _placeholder(linear: nn.Module) -> nn.Module:
    """An int8 linear layer to load a cached one into: 1 x 1, so nothing large is packed twice
    (loading the state packs the real weight); its sizes are the layer's own, for ``repr``."""
    layer = nnqd.Linear(1, 1, bias_=linear.bias is not None, dtype=torch.qint8)
    layer.in_features, layer.out_features = linear.in_features, linear.out_features
    return layer


def skeleton(module: nn.Module) -> Int8Network:
    """The int8 network's structure, ready for :meth:`nn.Module.load_state_dict` of a cached one.

    ``module`` is the float network built on the meta device (no weights); it is changed in place.
    """
    for name in int8_layer_names(module):
        parent, _, child = name.rpartition(".")
        owner = module.get_submodule(parent)
        setattr(owner, child, _placeholder(getattr(owner, child)))
    gemms = None
    if _uses_conv_gemms(module):
        gemms = nn.ModuleList()
        for block in module.modality_encoders["AUDIO"].local_encoder.conv_layers[1:]:
            out, channels, kernel = block[0].weight.shape
            gemms.append(_placeholder(nn.Linear(kernel * channels, out, bias=block[0].bias is not None, device="meta")))
    return Int8Network(module.eval(), gemms)


# ---------------------------------------------------------------- the cache


def cache_dir(model_dir: Path) -> Path:
    """``<model_dir>/.emo-cache`` when the model folder is writable, else ``~/.cache/emo-assets``."""
    if os.access(model_dir, os.W_OK):
        return model_dir / CACHE_FOLDER
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emo-assets"


def _stat_signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def file_sha256(path: Path, memo_path: Path) -> str:
    """sha256 of ``path``'s content, remembered in ``memo_path`` with the file's size, inode and
    change times: any write to the file changes its ctime, so a remembered hash is of this content."""
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    key, signature = str(path.resolve()), _stat_signature(path)
    known = memo.get(key)
    if isinstance(known, dict) and known.get("stat") == signature and isinstance(known.get("sha256"), str):
        return known["sha256"]
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    memo[key] = {"stat": signature, "sha256": digest}
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(memo_path) as tmp:
            tmp.write_text(json.dumps(memo, indent=1))
    except OSError as exc:
        log.warning(f"could not remember the sha256 of {path} in {memo_path} ({exc}); it is hashed again next time")
    return digest


def cache_key(model_dir: Path, folder: Path, precision: str = "int8") -> tuple[str, dict]:
    """The cache file's key and what it is made of (the model files' sha256, versions, precision)."""
    parts = {
        "format": CACHE_FORMAT,
        "precision": precision,
        "torch": torch.__version__,
        "funasr": importlib.metadata.version("funasr"),
        "model_dir": str(model_dir.resolve()),
        "files": {name: file_sha256(model_dir / name, folder / "hashes.json") for name in MODEL_FILES},
    }
    keyed = {k: v for k, v in parts.items() if k != "model_dir"}  # a copied model shares its cache key
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:32], parts


def _state(network: Int8Network) -> dict:
    return {
        "module": network.module.state_dict(),
        "conv_gemms": None if network.conv_gemms is None else network.conv_gemms.state_dict(),
    }


class CorruptCache(Exception):
    """A cache file that does not match its manifest, cannot be read or does not fit the network."""


def _read(path: Path, manifest_path: Path, meta_module: nn.Module) -> Int8Network:
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise CorruptCache(f"its manifest {manifest_path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise CorruptCache(f"its manifest cannot be read ({exc})") from exc
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != manifest.get("sha256"):
        raise CorruptCache(f"its sha256 {digest[:12]}... is not the {str(manifest.get('sha256'))[:12]}... written")
    try:
        with warnings.catch_warnings():  # torch's own loader of quantised tensors uses TypedStorage
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        network = skeleton(meta_module)
        network.module.load_state_dict(state["module"], strict=True, assign=True)
        if (network.conv_gemms is None) != (state["conv_gemms"] is None):
            raise ValueError("the conv front end's int8 layers do not match the model's extractor")
        if network.conv_gemms is not None:
            network.conv_gemms.load_state_dict(state["conv_gemms"], strict=True, assign=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or misfitting state is one clear case
        raise CorruptCache(f"it does not load into the network ({type(exc).__name__}: {exc})") from exc
    return network


def _write(path: Path, manifest_path: Path, network: Int8Network, parts: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(_state(network), tmp)
        with open(tmp, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    with atomic_write(manifest_path) as f:  # after the file: a crash between leaves no manifest (rebuilt)
        f.write(json.dumps({**parts, "file": path.name, "sha256": digest}, indent=1).encode())


def load_int8(
    model_dir: Path, meta_module: Callable[[], nn.Module], float_module: Callable[[], nn.Module]
) -> Int8Network:
    """The int8 network of the model in ``model_dir``: read from the cache when it holds this
    model's, else quantised from ``float_module()`` and written to the cache.

    ``meta_module()`` builds the float network on the meta device (no weights read); ``float_module()``
    builds it with its weights. A corrupt cache file is logged and rebuilt; a cache folder that cannot
    be written is logged and the model quantised at every start.
    """
    folder = cache_dir(model_dir)
    key, parts = cache_key(model_dir, folder)
    path, manifest_path = folder / f"int8-{key}.pt", folder / f"int8-{key}.json"
    if path.exists():
        try:
            network = _read(path, manifest_path, meta_module())
            log.info(f"int8 network read from the cache {path}")
            return network
        except CorruptCache as exc:
            log.warning(f"the int8 cache {path} is corrupt: {exc}; quantising again and rewriting it")
    network = quantise(float_module())
    try:
        _write(path, manifest_path, network, parts)
        log.info(f"int8 network quantised and cached in {path}")
    except OSError as exc:
        log.warning(f"could not write the int8 cache {path} ({exc}); the next start quantises again")
    return network
