"""funasr's emotion2vec+ classes without funasr's package init (which imports every model it has), and
funasr's ffmpeg notice never reaching our users (everything else funasr prints does)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emo_assets.lib.model.funasr_import import FFMPEG_NOTICE, funasr_module, without_ffmpeg_notice
from tests.helpers import REPO, emo_env


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=emo_env(PYTHONPATH=str(REPO)),
        timeout=600,
    )


def test_only_the_notice_is_removed():
    assert without_ffmpeg_notice("before\n" + FFMPEG_NOTICE + "after\n") == "before\nafter\n"
    assert without_ffmpeg_notice("Notice: ffmpeg is not installed. (reworded)\n") == (
        "Notice: ffmpeg is not installed. (reworded)\n"
    )


@pytest.mark.skipif(shutil.which("ffmpeg") is not None, reason="funasr prints the notice only without ffmpeg")
def test_funasr_prints_the_notice_and_our_import_and_commands_do_not(tmp_path):
    plain = run_python("import funasr.models.emotion2vec.model")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert FFMPEG_NOTICE in plain.stdout  # the exact text we remove is what this funasr prints

    # a command that builds funasr's Emotion2vec and one that loads it, in fresh processes
    made = run_python("from emo_assets.cli import main; main()", "make-test-model", str(tmp_path / "m"))
    assert made.returncode == 0, made.stderr[-2000:]
    loaded = run_python(
        "import sys\n"
        "from emo_assets.lib.model.loading import load_model\n"
        "from emo_assets.lib.model.settings import ModelSettings\n"
        "print(load_model(ModelSettings(model=sys.argv[1], device='cpu')).model_id)\n",
        str(tmp_path / "m"),
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip().endswith("random-tiny-seed0")
    for done in (made, loaded):
        assert "ffmpeg" not in done.stdout + done.stderr


# Runs in a fresh interpreter: which funasr modules are imported is process-wide state.
_SCRIPT = """
import json, sys
import numpy as np
from emo_assets.lib.model.loading import load_model
from emo_assets.lib.model.settings import ModelSettings

model = load_model(ModelSettings(model=sys.argv[1], device="cpu"))
clip = (0.1 * np.sin(np.arange(24_000) / 7.0)).astype(np.float32)
(ours,) = model.infer([clip])
loaded = sorted(m for m in sys.modules if m.startswith("funasr."))
package = sys.modules["funasr"]
deferred = "__version__" not in vars(package)

from funasr import AutoModel  # the first use of the package itself runs its __init__, in place
from funasr.models.emotion2vec.model import Emotion2vec
from funasr.register import tables

import funasr
theirs = AutoModel(model=sys.argv[1], device="cpu", disable_update=True, disable_pbar=True)
(ref,) = theirs.generate(input=clip, granularity="utterance", extract_embedding=True)
print(json.dumps({
    "loaded_before": loaded,
    "deferred": deferred,
    "same_package": funasr is package,
    "version": funasr.__version__,
    "same_class": type(model.module) is Emotion2vec is tables.model_classes.get("Emotion2vec"),
    "models_after": sum(m.startswith("funasr.models.") for m in sys.modules),
    "bound": funasr.models.emotion2vec.model is sys.modules["funasr.models.emotion2vec.model"],
    "max_abs_embedding": float(np.abs(ours.embedding - ref["feats"]).max()),
}))
"""


def test_the_model_loads_without_funasrs_package_init_and_keeps_its_numbers(tiny_model_dir: Path) -> None:
    from importlib.metadata import version

    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tiny_model_dir)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # Loading imported funasr's emotion2vec modules and what they import, no other model of funasr.
    assert "funasr.models.emotion2vec.model" in out["loaded_before"]
    assert "funasr.tokenizer.char_tokenizer" in out["loaded_before"]
    others = [m for m in out["loaded_before"] if m.startswith("funasr.models.") and ".emotion2vec" not in m]
    assert others == []
    assert out["deferred"] is True
    # Then funasr's own init ran in the same package object, as a plain `import funasr` would.
    assert out["same_package"] and out["version"] == version("funasr")
    assert out["models_after"] > 100 and out["bound"] and out["same_class"]
    assert out["max_abs_embedding"] <= 1e-4


def test_only_funasr_modules() -> None:
    with pytest.raises(ValueError, match="not a funasr submodule"):
        funasr_module("torch.nn")
