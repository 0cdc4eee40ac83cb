"""funasr's emotion2vec+ classes without funasr's package init.

``import funasr`` runs ``funasr/__init__.py``, which imports every submodule funasr has (every ASR,
VAD, TTS... model, so that each registers in ``funasr.register.tables``): about 14 s on an idle
2-core machine, paid by every process that loads the model. The emotion2vec+ network needs two of
those modules: ``funasr.models.emotion2vec.model`` (registers ``Emotion2vec``) and
``funasr.tokenizer.char_tokenizer`` (registers ``CharTokenizer``).

:func:`funasr_class` imports only the module that registers the class asked for (and
:func:`funasr_module` any one funasr module, e.g. its hub download code). It puts funasr's
package object in ``sys.modules`` *before* running its ``__init__`` (Python imports a submodule
through its parent package's ``__path__``; the parent's code is what takes the time), and defers
that ``__init__`` to the first use of anything else of the package (``funasr.AutoModel``,
``funasr.__version__``...), when it runs in that same package object exactly as a plain
``import funasr`` would. The classes, the registry and the numbers are funasr's own; only the
moment the rest of funasr is imported changes. A class we do not know the module of is looked up
after the full package init, as before.

funasr also prints "Notice: ffmpeg is not installed. torchaudio is used to load audio ..." when
``funasr/utils/load_utils.py`` is imported on a machine without an ``ffmpeg`` binary (it runs
``ffmpeg -version`` at import time), and ``funasr.models.emotion2vec.model`` imports that module
itself; funasr has no setting for it. The notice is about funasr's own audio loader, which we never
call (recordings are decoded with PyAV and resampled with soxr). So the first funasr import here runs
with standard output captured, and exactly that notice (matched in full: a reworded notice would show
again) is removed; everything else funasr printed is written back. ``print`` itself is left alone.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
import threading
from types import ModuleType
from typing import Any

# (registry table, registered name) -> the funasr module whose import registers it
_REGISTERING_MODULE = {
    ("model_classes", "Emotion2vec"): "funasr.models.emotion2vec.model",
    ("tokenizer_classes", "CharTokenizer"): "funasr.tokenizer.char_tokenizer",
}
_LOCK = threading.RLock()

# funasr 1.4.16, funasr/utils/load_utils.py, printed at import when `ffmpeg -version` fails.
FFMPEG_NOTICE = (
    "Notice: ffmpeg is not installed. torchaudio is used to load audio\n"
    "If you want to use ffmpeg backend to load audio, please install it by:"
    "\n\tsudo apt install ffmpeg # ubuntu"
    "\n\t# brew install ffmpeg # mac\n"
)


def without_ffmpeg_notice(printed: str) -> str:
    """``printed`` without funasr's ffmpeg notice; every other character kept."""
    return printed.replace(FFMPEG_NOTICE, "")


@contextlib.contextmanager
def _quiet_ffmpeg_notice():
    """Capture what a first funasr import prints and write it back without the ffmpeg notice."""
    if "funasr.utils.load_utils" in sys.modules:
        yield
        return
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        sys.stdout.write(without_ffmpeg_notice(printed.getvalue()))


def funasr_class(table: str, name: str) -> Any:
    """The class funasr registered as ``name`` in ``funasr.register.tables.<table>``, or None.

    emotion2vec+'s own classes are imported without funasr's package init; anything else after it.
    """
    with _LOCK:
        module = _REGISTERING_MODULE.get((table, name))
        if module is not None:
            funasr_module(module)
        else:
            _package_init()
        tables = funasr_module("funasr.register").tables
        return getattr(tables, table).get(name)


def funasr_module(name: str) -> ModuleType:
    """``importlib.import_module(name)`` for a ``funasr.*`` module, without funasr's package init
    (deferred to the first use of the package itself; see the module docstring)."""
    if not name.startswith("funasr."):
        raise ValueError(f"{name!r} is not a funasr submodule")
    with _LOCK:
        if name in sys.modules:
            return sys.modules[name]
        if "funasr" not in sys.modules:
            spec = importlib.util.find_spec("funasr")
            if spec is None or spec.loader is None:
                raise ModuleNotFoundError("funasr is not installed; reinstall emo-assets with its dependencies")
            package = importlib.util.module_from_spec(spec)  # the package object; its __init__ not run yet
            package.__dict__["__getattr__"] = _DeferredInit(package, spec)
            sys.modules["funasr"] = package
        with _quiet_ffmpeg_notice():
            return importlib.import_module(name)


def _package_init() -> None:
    """Run funasr's package init now if it was deferred (a plain ``import funasr`` otherwise)."""
    package = sys.modules.get("funasr")
    hook = package.__dict__.get("__getattr__") if package is not None else None
    if isinstance(hook, _DeferredInit):
        hook.run()
    else:
        with _quiet_ffmpeg_notice():
            importlib.import_module("funasr")


class _DeferredInit:
    """Module ``__getattr__`` of the not yet initialised funasr package: runs its ``__init__`` in
    place (same module object, so submodules imported before stay bound to it), then answers."""

    def __init__(self, package: ModuleType, spec: Any) -> None:
        self.package = package
        self.spec = spec
        self.running = False

    def run(self) -> None:
        with _LOCK:
            if self.package.__dict__.get("__getattr__") is not self or self.running:
                return
            self.running = True
            try:
                del self.package.__dict__["__getattr__"]  # funasr's __init__ defines its own
                with _quiet_ffmpeg_notice():
                    self.spec.loader.exec_module(self.package)
            finally:
                self.running = False

    def __call__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)  # import machinery probing (__file__ etc. exist; others do not)
        if self.running:
            raise AttributeError(f"module 'funasr' has no attribute {name!r} (its __init__ is running)")
        self.run()
        return getattr(self.package, name)
