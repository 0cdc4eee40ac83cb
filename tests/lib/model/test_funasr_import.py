"""funasr's ffmpeg notice never reaches our users; everything else funasr prints does."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from emo_assets.lib.model.funasr_import import FFMPEG_NOTICE, without_ffmpeg_notice
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
