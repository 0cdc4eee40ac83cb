"""Replace a file as a whole: write a temporary file beside it, fsync, then rename it over the target.

A reader sees the old file or the new one, never half a file, and a failed write leaves the old file
in place. The temporary file is ``.{name}.<random>.tmp`` in the target's folder (hidden, so globs for
``*.parquet`` or ``*.flac`` never match it; same filesystem, so the rename is atomic). It is removed
when the write raises; a process killed mid-write leaves it behind, for :func:`remove_stale_temps`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the name of an empty temporary file beside ``path``; on a clean exit it replaces ``path``.

    For writers that want a file name (``shutil.copyfile``, ``Path.write_text``); a writer that takes a
    file object is simpler with :func:`atomic_write`.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0o600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file open for writing; on a clean exit its content replaces ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def remove_stale_temps(folder: Path, name: str) -> None:
    """Delete the temporary files that killed writers of ``folder/<name>`` left (``name`` may be a glob).

    Only while no other writer of those files can be running (the caller holds the lock).
    """
    for stale in Path(folder).glob(f".{name}.*.tmp"):
        stale.unlink(missing_ok=True)
