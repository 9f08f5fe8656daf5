"""One OpenVINO ``Core`` per process, and NNCF's own Cores kept from leaving a dead signal stack behind.

Each ``ov.Core`` that loads the CPU plugin installs an alternate signal stack (``sigaltstack``,
11.5 KB) on the calling thread and, when the Core dies, puts back the one it found. Cores that
die out of creation order (A, B created; A, then B destroyed) leave the thread pointing at A's
freed stack. Python runs its signal handlers on the alternate stack (``SA_ONSTACK``), so the next
handled signal (SIGCHLD once torch's DataLoader has installed its handler, a child process
exiting; Ctrl-C's SIGINT) kills the process with SIGSEGV (``si_code`` SI_KERNEL: the kernel cannot
write the signal frame) and no Python traceback. Seen as the test suite dying while it waited for
a child, reproduced with two Cores and ``subprocess.run(["true"])`` (``tests/test_openvino_core.py``).

Hence: every Core the pipeline uses is ``core()``, created once and never destroyed, so its stack
stays valid; and NNCF calls, which create and drop Cores of their own, run inside
``alternate_stack_kept()``, which puts back the thread's stack as it was before the call.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys


@functools.cache
def core():
    """The process's ``ov.Core`` (created on first use)."""
    import openvino as ov

    return ov.Core()


class _Stack(ctypes.Structure):  # stack_t, <signal.h>
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _sigaltstack():
    return ctypes.CDLL(None, use_errno=True).sigaltstack if sys.platform.startswith("linux") else None


def current_alternate_stack() -> tuple[int, int, int] | None:
    """(address, flags, size) of this thread's alternate signal stack; None where it cannot be asked (not Linux)."""
    call = _sigaltstack()
    if call is None:
        return None
    now = _Stack()
    if call(None, ctypes.byref(now)) != 0:
        return None
    return now.ss_sp or 0, now.ss_flags, now.ss_size


@contextlib.contextmanager
def alternate_stack_kept():
    """Run the block, then give this thread back the alternate signal stack it had before (if the block changed it)."""
    call = _sigaltstack()
    before = _Stack()
    if call is None or call(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        now = _Stack()
        call(None, ctypes.byref(now))
        if (now.ss_sp, now.ss_size, now.ss_flags) != (before.ss_sp, before.ss_size, before.ss_flags):
            call(ctypes.byref(before), None)  # SS_DISABLE in before.ss_flags disables it, as it was
