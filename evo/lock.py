"""One live search per study and repository: an flock, released by the kernel when evo dies.

A lock file left behind by a killed process is stale by construction (flock dies with its
holder), so it is simply taken over; the pid written inside only makes the refusal readable.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evo.errors import EvoError, StudyLocked


@contextmanager
def study_lock(git_dir: Path, study: str) -> Iterator[None]:
    path = git_dir / "evo" / f"{study}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only repository, a full disk: one line, not a traceback
        raise EvoError(f"cannot take the lock of study '{study}' ({path}): {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "another process"
            raise StudyLocked(f"study '{study}' is already running ({holder}); wait for it or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        os.close(fd)  # closing drops the flock
