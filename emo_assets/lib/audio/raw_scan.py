"""Find every file that landed for a day under ``data/raw/<day>/``, and say which ones we may read.

``scan_day`` returns two lists, both sorted by ``source_path`` (the POSIX path relative to the raw root,
e.g. ``"2026-11-24/calls/a.wav"``):

* **files** to process: regular, readable files with an audio extension (:data:`AUDIO_EXTENSIONS`,
  any case), including symlinks whose target lies inside the raw root.
* **refused** ``(source_path, reason)``: things that landed but must not be read, so that nothing is
  dropped without a trace: symlinks pointing outside the raw root or nowhere, unreadable files and
  directories, FIFOs/devices, non-audio extensions, hidden files, hidden directories (one entry each,
  not descended), symlinked directories (not followed: one entry each), names that are not UTF-8.

Ignored without a trace, because they are not uploads: OS litter (``.DS_Store``, ``Thumbs.db``,
``desktop.ini``, macOS ``._*`` resource forks) and files still being copied (``*.part``, ``*.tmp``,
``*.crdownload``, ``*.partial``); the next run picks up the finished file. A folder's ``channels.toml``
is configuration, not an upload: the resample stage reads it (lib/audio/channels.py).

A directory named like an audio file (``x.wav/``) is a directory: it is walked, not returned.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus", ".oga"})
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
CHANNELS_CONFIG = "channels.toml"  # a folder's two-channel layout (lib/audio/channels.py), not an upload
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")

REASON_OUTSIDE = "symlink points outside data/raw: refused"
REASON_BROKEN_LINK = "broken symlink: its target does not exist"
REASON_LINKED_DIR = "symlinked directory: not followed (copy or link the files themselves)"
REASON_UNREADABLE = "unreadable file: permission denied (fix its permissions, then re-run the day)"
REASON_UNREADABLE_DIR = "unreadable directory: permission denied (fix its permissions, then re-run the day)"
REASON_NOT_REGULAR = "not a regular file (FIFO, socket or device)"
REASON_NOT_AUDIO = "not an audio file extension"
REASON_HIDDEN = "hidden file: not processed (remove the leading dot to include it)"
REASON_HIDDEN_DIR = "hidden directory: not scanned (remove the leading dot to include it)"
REASON_BAD_NAME = "file name is not valid UTF-8: rename it"


@dataclass(frozen=True)
class RawFile:
    """One file to process. ``path`` is absolute (under the resolved raw root, links not resolved)."""

    source_path: str
    path: Path
    size_bytes: int
    mtime_ns: int = 0  # modification time when scanned (the settle rule: lib/audio/settle.py)


def scan_day(raw_root: Path, day: str) -> tuple[list[RawFile], list[tuple[str, str]]]:
    """Walk ``raw_root/day`` recursively: (files to process, refused (source_path, reason)).

    A missing day directory gives two empty lists. ``day`` must be a single path component.
    """
    if not day or day in (".", "..") or "/" in day or os.sep in day or "\0" in day:
        raise ValueError(f"scan_day: day must be a directory name like '2026-11-24', got {day!r}")
    root = Path(raw_root).resolve()
    day_dir = root / day
    if day_dir.is_symlink():
        if not _inside(day_dir, root):
            return [], [(day, REASON_OUTSIDE)]
    if not day_dir.is_dir():
        return [], []

    files: list[RawFile] = []
    refused: list[tuple[str, str]] = []

    def on_walk_error(error: OSError) -> None:
        if error.filename:
            refused.append((_source_path(Path(error.filename), root), REASON_UNREADABLE_DIR))

    for dirpath, dirnames, filenames in os.walk(day_dir, onerror=on_walk_error):
        here = Path(dirpath)
        for name in sorted(dirnames):
            entry = here / name
            reason = None
            if not _is_utf8(name):
                reason = REASON_BAD_NAME
            elif entry.is_symlink():
                reason = REASON_LINKED_DIR if _inside(entry, root) else REASON_OUTSIDE
            elif name.startswith("."):
                reason = REASON_HIDDEN_DIR
            if reason is not None:
                refused.append((_source_path(entry, root), reason))
                dirnames.remove(name)  # os.walk does not descend into removed names
        dirnames.sort()
        for name in sorted(filenames):
            entry = here / name
            if _is_junk(name) or name == CHANNELS_CONFIG:
                continue
            reason = _refusal(entry, name, root)
            if reason is not None:
                refused.append((_source_path(entry, root), reason))
                continue
            try:
                st = entry.stat()
            except OSError:
                refused.append((_source_path(entry, root), REASON_UNREADABLE))
                continue
            files.append(
                RawFile(
                    source_path=_source_path(entry, root), path=entry, size_bytes=st.st_size, mtime_ns=st.st_mtime_ns
                )
            )

    files.sort(key=lambda f: f.source_path)
    refused.sort()
    return files, refused


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _refusal(entry: Path, name: str, root: Path) -> str | None:
    if not _is_utf8(name):
        return REASON_BAD_NAME
    if entry.is_symlink():
        try:
            target = entry.resolve(strict=True)
        except (OSError, RuntimeError):  # missing target or a loop
            return REASON_BROKEN_LINK
        if not target.is_relative_to(root):
            return REASON_OUTSIDE
    if name.startswith("."):
        return REASON_HIDDEN
    if Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
        return REASON_NOT_AUDIO
    try:
        mode = entry.stat().st_mode
    except OSError:
        return REASON_UNREADABLE
    if not stat.S_ISREG(mode):
        return REASON_NOT_REGULAR
    if not os.access(entry, os.R_OK):
        return REASON_UNREADABLE
    return None


def _is_junk(name: str) -> bool:
    lower = name.lower()
    return lower in JUNK_NAMES or name.startswith("._") or lower.endswith(IN_PROGRESS_SUFFIXES)


def _inside(link: Path, root: Path) -> bool:
    try:
        return link.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def _source_path(entry: Path, root: Path) -> str:
    relative = entry.relative_to(root).as_posix()
    # Keep refused entries with undecodable names printable and storable.
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
