"""Erased recordings, remembered without their identifiers: the salt, the tombstones, the erasure log.

Everything lives in ``<data>/erasure/``:

* ``salt``: 32 random bytes made at the first erasure (mode 0600). Without it a tombstone cannot be
  checked against a guessed file; with it, only a recording whose bytes one already has can be.
* ``tombstones``: one line per erased recording, ``HMAC-SHA256(salt, audio_id)`` in hex. Ingest
  honours it (:func:`erased_checker`): bytes landing again after their erasure are deleted on sight.
* ``erasure_log.jsonl``: one JSON object per erasure: when, the hashed identifier, and what was
  removed where (counts per table, file and index; never an identifier or a file name in the clear).

An ``audio_id`` is the SHA-256 of a file's bytes (lib/audio/raw_scan.py); it is itself personal data
once it is linked to a caller, hence the keyed hash. No dagster here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from emo_assets.lib.files.atomic import atomic_write

ERASURE_DIR = "erasure"
SALT_FILE = "salt"
TOMBSTONES_FILE = "tombstones"
LOG_FILE = "erasure_log.jsonl"


def erasure_dir(data_root: Path) -> Path:
    return Path(data_root) / ERASURE_DIR


def _salt(data_root: Path, create: bool) -> bytes | None:
    path = erasure_dir(data_root) / SALT_FILE
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(secrets.token_hex(32).encode())
    os.chmod(path, 0o600)
    return bytes.fromhex(path.read_text().strip())


def hashed_id(data_root: Path, audio_id: str) -> str:
    """The keyed hash an erased ``audio_id`` is remembered by (creates the salt on first use)."""
    return hmac.new(_salt(data_root, create=True), audio_id.encode(), hashlib.sha256).hexdigest()


def add_tombstones(data_root: Path, audio_ids: list[str]) -> list[str]:
    """Remember ``audio_ids`` as erased (before anything is removed, so a run meanwhile cannot bring
    them back); returns their hashes."""
    hashes = [hashed_id(data_root, a) for a in audio_ids]
    path = erasure_dir(data_root) / TOMBSTONES_FILE
    known = set(path.read_text().split()) if path.exists() else set()
    new = [h for h in hashes if h not in known]
    if new:
        with path.open("a") as f:
            f.write("".join(f"{h}\n" for h in new))
            f.flush()
            os.fsync(f.fileno())
    return hashes


def erased_checker(data_root: Path) -> Callable[[str], bool]:
    """``is_erased(audio_id)`` for the tombstones as they are now (always False before any erasure)."""
    salt = _salt(data_root, create=False)
    path = erasure_dir(data_root) / TOMBSTONES_FILE
    if salt is None or not path.exists():
        return lambda audio_id: False
    known = frozenset(path.read_text().split())
    return lambda audio_id: hmac.new(salt, audio_id.encode(), hashlib.sha256).hexdigest() in known


def append_log(data_root: Path, id_hashes: list[str], removed: dict, now: dt.datetime | None = None) -> Path:
    """Append one erasure to the log: when, the hashed ids, and the counts of what was removed."""
    path = erasure_dir(data_root) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "erased_at": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "ids_hmac_sha256": sorted(id_hashes),
        "removed": removed,
    }
    with path.open("a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def read_log(data_root: Path) -> list[dict]:
    path = erasure_dir(data_root) / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
