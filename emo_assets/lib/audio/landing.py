"""What has landed in ``data/raw``: one fingerprint per day folder, to notice new or changed files."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path


def is_day_name(name: str) -> bool:
    try:
        return dt.date.fromisoformat(name).isoformat() == name
    except ValueError:
        return False


def day_fingerprint(day_dir: Path, settle_s: float = 0.0, now: float | None = None) -> str | None:
    """A hash of every file's path, size and mtime under ``day_dir``.

    None while any file changed less than ``settle_s`` seconds ago (still being copied), so a
    run never starts on half an upload.
    """
    now = time.time() if now is None else now
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(day_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if now - st.st_mtime < settle_s:
                return None
            rel = path.relative_to(day_dir).as_posix()
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def landed_days(raw_root: Path) -> list[str]:
    if not Path(raw_root).is_dir():
        return []
    return sorted(p.name for p in Path(raw_root).iterdir() if p.is_dir() and is_day_name(p.name))
