"""scan_day accounts for everything that landed: files to process, and refusals with reasons."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from emo_assets.lib.audio import raw_scan
from emo_assets.lib.audio.raw_scan import (
    AUDIO_EXTENSIONS,
    REASON_BROKEN_LINK,
    REASON_HIDDEN,
    REASON_HIDDEN_DIR,
    REASON_LINKED_DIR,
    REASON_NOT_AUDIO,
    REASON_NOT_REGULAR,
    REASON_OUTSIDE,
    REASON_UNREADABLE,
    RawFile,
    scan_day,
    sha256_file,
)

DAY = "2026-11-24"


@pytest.fixture
def raw_root(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "raw"
    (root / DAY).mkdir(parents=True)
    return root


def touch(path: Path, data: bytes = b"RIFF....WAVE") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sources(files: list[RawFile]) -> list[str]:
    return [f.source_path for f in files]


def test_nested_dirs_are_walked_sorted_with_paths_sizes_and_any_case_extension(raw_root: Path) -> None:
    touch(raw_root / DAY / "calls" / "b.wav", b"12345")
    touch(raw_root / DAY / "calls" / "a.MP3")
    touch(raw_root / DAY / "z.flac")
    touch(raw_root / DAY / "calls" / "deep" / "er" / "c.Opus")
    touch(raw_root / "2026-11-25" / "other_day.wav")

    files, refused = scan_day(raw_root, DAY)

    assert sources(files) == [
        f"{DAY}/calls/a.MP3",
        f"{DAY}/calls/b.wav",
        f"{DAY}/calls/deep/er/c.Opus",
        f"{DAY}/z.flac",
    ]
    assert refused == []
    b = files[1]
    assert b.path == raw_root.resolve() / DAY / "calls" / "b.wav" and b.path.is_absolute()
    assert b.size_bytes == 5


def test_every_audio_extension_is_accepted(raw_root: Path) -> None:
    for ext in AUDIO_EXTENSIONS:
        touch(raw_root / DAY / f"clip{ext.upper()}")

    files, refused = scan_day(raw_root, DAY)

    assert len(files) == len(AUDIO_EXTENSIONS) == 8 and refused == []


def test_missing_day_gives_empty_lists(raw_root: Path) -> None:
    assert scan_day(raw_root, "1999-01-01") == ([], [])
    assert scan_day(raw_root.parent / "nowhere", DAY) == ([], [])


@pytest.mark.parametrize("day", ["", ".", "..", "../etc", "2026/11"])
def test_day_must_be_one_directory_name(raw_root: Path, day: str) -> None:
    with pytest.raises(ValueError, match="day must be a directory name"):
        scan_day(raw_root, day)


def test_directory_named_like_audio_is_walked_not_returned(raw_root: Path) -> None:
    touch(raw_root / DAY / "x.wav" / "inside.wav")
    (raw_root / DAY / "empty.mp3").mkdir()

    files, refused = scan_day(raw_root, DAY)

    assert sources(files) == [f"{DAY}/x.wav/inside.wav"]
    assert refused == []


def test_symlinks_inside_root_are_followed_outside_refused(raw_root: Path, tmp_path: Path) -> None:
    secret = touch(tmp_path / "secret" / "passwd.wav")
    touch(tmp_path / "secret" / "more.wav")
    inside = touch(raw_root / "shared" / "jingle.wav", b"abc")
    day = raw_root / DAY
    (day / "escape.wav").symlink_to(secret)
    (day / "escape_dir").symlink_to(secret.parent, target_is_directory=True)
    (day / "relative_escape.wav").symlink_to(Path("..") / ".." / ".." / "secret" / "passwd.wav")
    (day / "jingle.wav").symlink_to(inside)
    (day / "linked_dir").symlink_to(raw_root / "shared", target_is_directory=True)
    (day / "dangling.wav").symlink_to(day / "never_there.wav")
    (day / "notes.txt").symlink_to(secret)  # outside wins over the extension

    files, refused = scan_day(raw_root, DAY)

    assert [(f.source_path, f.size_bytes) for f in files] == [(f"{DAY}/jingle.wav", 3)]
    assert refused == [
        (f"{DAY}/dangling.wav", REASON_BROKEN_LINK),
        (f"{DAY}/escape.wav", REASON_OUTSIDE),
        (f"{DAY}/escape_dir", REASON_OUTSIDE),
        (f"{DAY}/linked_dir", REASON_LINKED_DIR),
        (f"{DAY}/notes.txt", REASON_OUTSIDE),
        (f"{DAY}/relative_escape.wav", REASON_OUTSIDE),
    ]
    assert REASON_OUTSIDE == "symlink points outside data/raw: refused"


def test_day_directory_linked_outside_the_root_is_refused_whole(raw_root: Path, tmp_path: Path) -> None:
    touch(tmp_path / "elsewhere" / "a.wav")
    (raw_root / "2026-11-26").symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    assert scan_day(raw_root, "2026-11-26") == ([], [("2026-11-26", REASON_OUTSIDE)])


WEIRD_NAMES = [
    'it\'s "quoted".wav',
    "with spaces  and\ttab.wav",
    "émotion_日本語_😀.wav",
    "line\nbreak.wav",
    "x'); DROP TABLE emotion_scores;--.wav",
    "-starts-with-dash.wav",
    "back\\slash.wav",
]


def test_weird_file_names_come_back_exactly(raw_root: Path) -> None:
    for name in WEIRD_NAMES:
        touch(raw_root / DAY / name)

    files, refused = scan_day(raw_root, DAY)

    assert sources(files) == sorted(f"{DAY}/{name}" for name in WEIRD_NAMES)
    assert all(f.path.read_bytes() == b"RIFF....WAVE" for f in files)
    assert refused == []


def test_non_utf8_name_is_refused_with_a_printable_path(raw_root: Path) -> None:
    name = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes: not UTF-8
    try:
        touch(raw_root / DAY / name)
    except (OSError, UnicodeEncodeError):
        pytest.fail("this file system should accept arbitrary bytes in names")

    files, refused = scan_day(raw_root, DAY)

    assert files == []
    assert refused == [(f"{DAY}/caf\ufffd.wav", raw_scan.REASON_BAD_NAME)]
    refused[0][0].encode("utf-8")  # storable


def test_non_audio_hidden_and_junk_files(raw_root: Path) -> None:
    day = raw_root / DAY
    for name in [
        "notes.txt",
        "README",
        "clip.wav.bak",
        ".hidden.wav",
        ".DS_Store",
        "Thumbs.db",
        "._clip.wav",
        "uploading.wav.part",
        "copy.tmp",
        "sub/desktop.ini",
        "ok.wav",
        ".Trash-1000/old.wav",
        ".Trash-1000/more.wav",
    ]:
        touch(day / name)

    files, refused = scan_day(raw_root, DAY)

    assert sources(files) == [f"{DAY}/ok.wav"]
    assert refused == [
        (f"{DAY}/.Trash-1000", REASON_HIDDEN_DIR),
        (f"{DAY}/.hidden.wav", REASON_HIDDEN),
        (f"{DAY}/README", REASON_NOT_AUDIO),
        (f"{DAY}/clip.wav.bak", REASON_NOT_AUDIO),
        (f"{DAY}/notes.txt", REASON_NOT_AUDIO),
    ]


def test_unreadable_file_is_refused(raw_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Permissions do not stop root (CI runs as root), so os.access is made to say what chmod 000 says.
    locked = touch(raw_root / DAY / "locked.wav")
    touch(raw_root / DAY / "open.wav")
    real_access = os.access

    def access(path: os.PathLike | str, mode: int, **kwargs: object) -> bool:
        return False if Path(path) == locked else real_access(path, mode, **kwargs)

    monkeypatch.setattr(raw_scan.os, "access", access)
    files, refused = scan_day(raw_root, DAY)

    assert sources(files) == [f"{DAY}/open.wav"]
    assert refused == [(f"{DAY}/locked.wav", REASON_UNREADABLE)]


def test_unreadable_directory_is_refused(raw_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(raw_root / DAY / "locked" / "a.wav")
    touch(raw_root / DAY / "ok.wav")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(raw_scan.os, "scandir", scandir)
    files, refused = scan_day(raw_root, DAY)

    assert sources(files) == [f"{DAY}/ok.wav"]
    assert refused == [(f"{DAY}/locked", raw_scan.REASON_UNREADABLE_DIR)]


def test_fifo_and_socket_named_like_audio_are_not_opened(raw_root: Path) -> None:
    os.mkfifo(raw_root / DAY / "pipe.wav")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(raw_root / DAY / "sock.mp3"))

        files, refused = scan_day(raw_root, DAY)

    assert files == []
    assert refused == [(f"{DAY}/pipe.wav", REASON_NOT_REGULAR), (f"{DAY}/sock.mp3", REASON_NOT_REGULAR)]


def test_sha256_file_streams_and_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 17)
    path = touch(tmp_path / "blob.bin", data)

    assert sha256_file(path, chunk_size=1024) == hashlib.sha256(data).hexdigest()
    assert sha256_file(touch(tmp_path / "empty.bin", b"")) == hashlib.sha256(b"").hexdigest()
