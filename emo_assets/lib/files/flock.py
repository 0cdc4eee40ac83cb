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
def exclusive_flock(
    path: Path,
    wait_s: float,
    poll_s: float,
    refused: Callable[[], Exception],
    on_wait: Callable[[float], None] | None = None,
    wait_every_s: float = 10.0,
) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if missing) and yield its descriptor.

    Tries every ``poll_s`` seconds; after ``wait_s`` raises ``refused()``, the caller's error naming
    the holder and the remedy. While waiting, ``on_wait(seconds waited)`` is called at the first
    refusal and then every ``wait_every_s`` seconds, so a wait is never silent.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        deadline = start + wait_s
        next_report = start
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    raise refused() from None
                if on_wait is not None and now >= next_report:
                    on_wait(now - start)
                    next_report = now + wait_every_s
                time.sleep(poll_s)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the flock
