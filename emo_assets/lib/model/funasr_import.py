"""The one place funasr is first imported, without its ffmpeg notice on our users' terminals.

funasr prints "Notice: ffmpeg is not installed. torchaudio is used to load audio ..." when it is
imported on a machine without an ``ffmpeg`` binary: ``funasr/utils/load_utils.py`` runs
``ffmpeg -version`` at import time. No import of funasr avoids it: ``funasr/__init__.py`` imports
every funasr submodule, and ``funasr.models.emotion2vec.model`` (the class we build) imports
``load_utils`` itself; funasr has no setting for it. The notice is about funasr's own audio loader,
which we never call (recordings are decoded with PyAV and resampled with soxr), so it is noise.

:func:`import_funasr` therefore performs the first funasr import with standard output captured,
removes exactly that notice (matched in full: a reworded notice would show again) and writes
everything else funasr printed back to standard output. ``print`` itself is left alone.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from types import ModuleType

# funasr 1.4.16, funasr/utils/load_utils.py, printed at import when `ffmpeg -version` fails.
FFMPEG_NOTICE = (
    "Notice: ffmpeg is not installed. torchaudio is used to load audio\n"
    "If you want to use ffmpeg backend to load audio, please install it by:"
    "\n\tsudo apt install ffmpeg # ubuntu"
    "\n\t# brew install ffmpeg # mac\n"
)

EMOTION2VEC_MODULE = "funasr.models.emotion2vec.model"


def without_ffmpeg_notice(printed: str) -> str:
    """``printed`` without funasr's ffmpeg notice; every other character kept."""
    return printed.replace(FFMPEG_NOTICE, "")


def import_funasr(module: str = EMOTION2VEC_MODULE) -> ModuleType:
    """Import ``module`` of funasr (default: the Emotion2vec model, which registers it in funasr's
    tables). The first call imports funasr as a whole, quietly; later calls are plain imports."""
    if "funasr.utils.load_utils" in sys.modules:
        return importlib.import_module(module)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            importlib.import_module(EMOTION2VEC_MODULE)  # reaches load_utils in any funasr layout
    finally:
        sys.stdout.write(without_ffmpeg_notice(printed.getvalue()))
    return importlib.import_module(module)
