"""What has landed in ``data/raw``: one fingerprint per day folder, to notice new or changed files."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path

from emo_assets.lib.audio.settle import is_young


def is_day_name(name: str) -> bool:
    try:
        return dt.date.fromisoformat(name).isoformat() == name
    except ValueError:
        return False


def day_fingerprint(day_dir: Path, settle_s: float = 0.0, now: float | None = None) -> str | None:
    """A hash of the path, size and mtime of every file under ``day_dir`` that has settled.

    A file still being written (the settle rule, lib/audio/settle.py) is left out: the files that
    landed earlier are run at once (the run defers the one in flight), and the fingerprint changes
    when it settles, so the next run takes it. None while no file has settled.
    """
    now = time.time() if now is None else now
    digest = hashlib.sha256()
    settled = 0
    for root, dirs, files in os.walk(day_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if is_young(st.st_mtime, settle_s, now):
                continue
            settled += 1
            rel = path.relative_to(day_dir).as_posix()
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest() if settled else None


def landed_days(raw_root: Path) -> list[str]:
    if not Path(raw_root).is_dir():
        return []
    return sorted(p.name for p in Path(raw_root).iterdir() if p.is_dir() and is_day_name(p.name))
