"""The machine's faults, told apart from the file's.

A quarantine row says the recording itself is bad. A full disk, a read-only or forbidden directory,
an I/O error or a lack of memory is not the recording's fault: it fails the step with
:class:`MachineFault`, whose message says what failed, where, and what to do.
"""

from __future__ import annotations

import errno
import os

# errno -> what to do about it
REMEDIES = {
    errno.ENOSPC: "free disk space (or point EMO_DATA_DIR at a larger disk), then re-run the day",
    errno.EDQUOT: "raise the disk quota (or point EMO_DATA_DIR elsewhere), then re-run the day",
    errno.EACCES: "give the pipeline's user write access (or point EMO_DATA_DIR elsewhere), then re-run the day",
    errno.EPERM: "give the pipeline's user write access (or point EMO_DATA_DIR elsewhere), then re-run the day",
    errno.EROFS: "remount the file system read-write (or point EMO_DATA_DIR elsewhere), then re-run the day",
    errno.EIO: "check the disk (dmesg, SMART), then re-run the day",
    errno.ENOMEM: "free memory or run fewer processes at once, then re-run the day",
}


class MachineFault(RuntimeError):
    """A step failed because of the machine (disk, permissions, memory), not because of a file."""


def is_machine_fault(exc: BaseException, *, own_file: bool = True) -> bool:
    """True for MemoryError and for an OSError whose errno is the machine's. ``own_file=False``
    (a landed raw file we only read): permission errors are the file's, not the machine's."""
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, OSError) or exc.errno not in REMEDIES:
        return False
    return own_file or exc.errno not in (errno.EACCES, errno.EPERM)


def machine_fault(exc: BaseException, what: str, where: str | os.PathLike | None = None) -> MachineFault:
    """The step's error for ``exc``: what failed, where, and what to do."""
    if isinstance(exc, MemoryError):
        cause, remedy = "out of memory", REMEDIES[errno.ENOMEM]
    else:
        cause = f"{os.strerror(exc.errno)} [{errno.errorcode.get(exc.errno, exc.errno)}]"
        remedy = REMEDIES[exc.errno]
        where = where or exc.filename
    at = f" at {where}" if where else ""
    return MachineFault(f"{what} failed{at}: {cause}; not the recording's fault, nothing quarantined: {remedy}")


class DataDirError(MachineFault):
    """The data directory cannot be used: not a directory, or not writable."""


def check_data_dir(root: str | os.PathLike) -> None:
    """Refuse, in one line, a data directory that is a file or cannot be written (checked at run start)."""
    import tempfile
    from pathlib import Path

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataDirError(
            f"EMO_DATA_DIR={root} is a file, not a directory; point EMO_DATA_DIR (or --data-dir) at a folder"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):
            pass
    except OSError as exc:
        cause = f"{os.strerror(exc.errno)} [{errno.errorcode.get(exc.errno, exc.errno)}]" if exc.errno else str(exc)
        raise DataDirError(
            f"EMO_DATA_DIR={root} cannot be written ({cause}); the pipeline writes its lake, audio and warehouse "
            "there: fix its permissions or mount, or point EMO_DATA_DIR (or --data-dir) at a writable folder"
        ) from None
