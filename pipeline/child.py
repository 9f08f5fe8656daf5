"""Tools run as child processes (onnx2tf, a vendor compiler) die with the stage and leave nothing behind.

A child starts in its own process group, so a timeout, Ctrl-C or any error here kills it and
every process it started; on Linux it also asks the kernel to SIGKILL it the moment the
pipeline process dies (``PR_SET_PDEATHSIG``), the one case no handler here can run for: a
SIGKILL of the pipeline. The caller keeps the child's working folder inside the stage's
``.partial`` folder, which the next run deletes, so a kill leaks no temp folder either.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from collections.abc import Iterator
from typing import IO

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# The same request, as Python source for a child that is itself Python and starts children of its own
# (onnx2tf runs onnxsim): every process it starts also dies with it.
DIE_WITH_PARENT_SOURCE = """
import ctypes, os, signal, subprocess, sys
_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
def _die_with_parent(parent=os.getpid()):
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(137)
_popen_init = subprocess.Popen.__init__
def _init(self, *args, **kwargs):
    kwargs.setdefault("preexec_fn", _die_with_parent)
    _popen_init(self, *args, **kwargs)
subprocess.Popen.__init__ = _init
"""


def _libc_prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None).prctl  # looked up here: between fork and exec only the call itself is safe


_prctl = _libc_prctl()


def _die_with_parent(parent: int, niceness: int = 0) -> None:
    """Runs in the child between fork and exec: SIGKILL when the parent dies (and now, if it already has); a
    background child also lowers its own priority."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(137)
    if niceness:
        os.nice(niceness)


BACKGROUND_NICENESS = 19  # a background child takes the CPU time training leaves idle, and barely slows it
_background = {"depth": 0}  # >0 while background work runs (process-wide: the conversion's own thread starts the child)


@contextlib.contextmanager
def background_children() -> Iterator[None]:
    """Children started while this is open run at the lowest priority: work that overlaps training (the precheck's
    conversion) must not steal the cores training uses, only the time it leaves idle. Process-wide, so nothing else
    should start a child meanwhile (training stages start none)."""
    _background["depth"] += 1
    try:
        yield
    finally:
        _background["depth"] -= 1


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_child(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, stdout: IO | int | None = None,
              stderr: IO | int | None = None, timeout: float | None = None, text: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a tool: its own process group, killed with everything it started on a timeout
    (``subprocess.TimeoutExpired`` is raised after the kill), on Ctrl-C or any error here, or when we die."""
    parent, niceness = os.getpid(), BACKGROUND_NICENESS if _background["depth"] else 0
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text,
                            start_new_session=True, preexec_fn=lambda: _die_with_parent(parent, niceness))
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
