"""One writer per run folder: an exclusive ``flock`` on ``runs/<name>/.lock``, held while a command writes there.

Two runs of one recipe at once would delete each other's ``.partial`` folders and finished
stages; the second one instead stops at once, naming the folder and the PID that holds it
(exit 2). The kernel drops a ``flock`` when its holder exits, however it exits (SIGKILL
included), so a stale lock file never blocks the next run. The lock is re-entrant within
one process: a command that holds it can call another that takes it (``device`` merging
into the report).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # run folder -> how many nested holders in this process


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock for the ``with`` body; another process holding it is a one-line error."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held[run_dir] += 1
        try:
            yield
        finally:
            _held[run_dir] -= 1
        return
    fd = _open_lock_file(run_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{run_dir}: in use by another run (PID {_holder(fd)}); wait for it to finish, "
                                "or give this run another name") from None
        _record_pid(fd)
        _held[run_dir] = 1
        try:
            yield
        finally:
            del _held[run_dir]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock_file(run_dir: Path) -> int:
    """The lock file, created on first use; a read-only folder still locks through an existing file."""
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and path.is_file():
            return os.open(path, os.O_RDONLY)
        raise PipelineError(f"{run_dir}: cannot write there ({exc.strerror}); make it writable or set runs_dir "
                            "to a folder you can write") from None


def _record_pid(fd: int) -> None:
    """Write our PID into the lock file so a second run can name us (best effort: a read-only file keeps the old one)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass


def _holder(fd: int) -> str:
    """The PID the holder wrote; it writes it just after locking, so an empty file is read again a few times."""
    for _ in range(10):
        try:
            text = os.pread(fd, 32, 0).decode().strip()
        except OSError:
            break
        if text.isdigit():
            return text
        time.sleep(0.02)
    return "unknown"
