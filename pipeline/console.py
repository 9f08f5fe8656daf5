"""The one console every stage prints progress to (stderr, so stdout stays for what a command outputs).

A leaf: the run loop and every stage import it from here, never from ``pipeline.run``, so a stage
does not import the loop that runs it.
"""

import contextlib
import logging
from collections.abc import Iterator

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)
NNCF_LOGS = ("nncf", "torch.utils.cpp_extension")  # NNCF's progress lines; its torch backend's "no CUDA" warning


@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """Only errors from these loggers while a library runs: its progress bars and INFO lines would drown the stage's
    own output (levels restored after)."""
    logs = [logging.getLogger(name) for name in names]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
