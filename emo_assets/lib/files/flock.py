"""An exclusive ``flock`` on a lock file, waited for up to a deadline.

The kernel releases the lock when the descriptor is closed or the process ends, even on SIGKILL, so
a crashed holder never leaves it taken. Lock files are never deleted: unlinking a file another
process is waiting on would let two processes lock two different inodes of the same name.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_flock(path: Path, wait_s: float, poll_s: float, refused: Callable[[], Exception]) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if missing) and yield its descriptor.

    Tries every ``poll_s`` seconds; after ``wait_s`` raises ``refused()``, the caller's error naming
    the holder and the remedy.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise refused() from None
                time.sleep(poll_s)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the flock
