"""Filesystem failures while a stage writes, as one line: a full disk, a folder that cannot be written; and
``resolves_inside``, the one test of whether a path a file names stays in its folder.

Every writer fails its own way when the disk fills: Python raises ``OSError(ENOSPC)``, a tool
wrapper re-raises it as its own error, OpenVINO's C++ writer says ``basic_ios::clear:
iostream error`` and loses the errno, onnx2tf's child prints ``No space left on device``. So
a stage's failure is read as "disk full" when the errno or the words appear anywhere in its
exception chain, or when the filesystem has (almost) no space left after it failed. The line
names the folder, the free space and at least what the stage had written; the stage's
``.partial`` folder is removed, giving that space back (it is never taken as finished).
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError, one_line

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded")
LOW_SPACE = 1 << 20  # below this much free space, a failed write is taken for a full disk


def resolves_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, symlinks and '..' resolved, is ``root`` or under it (``root`` resolved too): what a file
    names (external data, a .bin, an image) may be read only when it stays in the folder the user gave."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def not_an_input(output: Path, inputs, flag: str = "-o") -> None:
    """Refuse an output path that is one of the command's own inputs (the same file by any path): writing it would
    destroy what is being read, e.g. a bundle written over the model it packs."""
    output = Path(output)
    for src in inputs:
        src = Path(src)
        same = src.exists() and output.exists() and os.path.samefile(src, output)
        if same or output.absolute() == src.absolute():
            also = "" if output.absolute() == src.absolute() else f" (the same file as {src})"
            raise PipelineError(f"{flag} {output}: is a file this command reads{also}; write the output to another file")


class WriteFailure(PipelineError):
    """A stage could not write its folder (already one line: not translated again by an outer handler)."""


def free_bytes(path: Path) -> int | None:
    """Free space on the filesystem holding ``path`` (or its nearest existing parent); None if unknown."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def folder_bytes(path: Path) -> int:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def human_bytes(n: float) -> str:
    units, i = ("B", "KiB", "MiB", "GiB", "TiB"), 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _errno(exc: BaseException, wanted: tuple[int, ...]) -> OSError | None:
    return next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno in wanted), None)


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """The errno or the words anywhere in the chain; else, for a tool's own error (not one of ours, which
    explains itself), a filesystem left with less than ``LOW_SPACE`` free."""
    if _errno(exc, DISK_FULL_ERRNOS) or any(w in str(e) for e in _chain(exc) for w in DISK_FULL_WORDS):
        return True
    free = free_bytes(folder)
    return not isinstance(exc, PipelineError) and free is not None and free < LOW_SPACE


def disk_full_message(folder: Path, exc: BaseException, written: int, previous: int) -> str:
    """'<folder>: disk full (<free> free; the stage needs more than the <n> it wrote…): <cause>; what to do'."""
    free = free_bytes(folder)
    facts = [f"{human_bytes(free) if free is not None else 'unknown'} free"]
    facts += [f"the stage needs more than the {human_bytes(written)} it wrote"] if written else []
    facts += [f"its last finished output was {human_bytes(previous)}"] if previous else []
    return (f"{folder}: disk full ({'; '.join(facts)}): {one_line(exc, 120)}; free space or set runs_dir on another "
            "disk, then re-run (finished stages are kept)")


@contextmanager
def stage_write_errors(partial: Path) -> Iterator[None]:
    """Turn a full disk or an unwritable folder while writing ``partial`` (a stage's ``.partial`` folder, or the
    run folder) into one line; other errors pass unchanged."""
    partial = Path(partial)
    try:
        yield
    except WriteFailure:
        raise
    except Exception as exc:
        if is_disk_full(exc, partial):
            written = previous = 0
            if partial.name.endswith(".partial"):  # a stage's folder: what it wrote, what it wrote last time
                written = folder_bytes(partial)
                previous = folder_bytes(partial.with_name(partial.name.removesuffix(".partial")))
                shutil.rmtree(partial, ignore_errors=True)  # never taken as finished; give the space back
            raise WriteFailure(disk_full_message(partial, exc, written, previous)) from None
        denied = _errno(exc, NOT_WRITABLE_ERRNOS)
        if denied is not None and not isinstance(exc, PipelineError):
            where = denied.filename or partial
            raise WriteFailure(f"{where}: {denied.strerror.lower()}; fix its permissions (the run folder must be "
                               "writable, data files readable) or set runs_dir to a folder you can write") from None
        raise
