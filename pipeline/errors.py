"""One exception type for mistakes a user can fix: the CLI prints it as one line, exit code 2."""

import re

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PipelineError(Exception):
    """A user-facing error: the message names the file, config key or tool, and what to do."""

    exit_code = 2


class GateFailure(PipelineError):
    """A benchmark gate was violated: the report is written, the run exits 3."""

    exit_code = 3


def one_line(text: str, limit: int = 160) -> str:
    """A foreign message (torch, a converter) fit for one error line: terminal escapes removed, whitespace
    collapsed, cut at a word boundary with an ellipsis, never mid-word."""
    flat = " ".join(_ESCAPES.sub("", str(text)).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "…"
