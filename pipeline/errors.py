"""One exception type for mistakes a user can fix: the CLI prints it as one line, exit code 2."""

import argparse
import re

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PipelineError(Exception):
    """A user-facing error: the message names the file, config key or tool, and what to do."""

    exit_code = 2


class GateFailure(PipelineError):
    """A benchmark gate was violated: the report is written, the run exits 3."""

    exit_code = 3


def printable(text: object) -> str:
    """``text`` with every character a terminal would not show as itself escaped (``\\n``, ``\\x07``, ``\\u200b``): a file
    named with a newline, or a key holding a zero-width space, reads as what it is, on one line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def one_line(message: object, limit: int = 200) -> str:
    """An exception or foreign text (torch, tar, a converter) as one line of at most ``limit`` characters:
    terminal escapes removed, whitespace collapsed, cut at a word boundary with '…' (a message cut
    mid-word reads as a different word)."""
    text = printable(" ".join(_ESCAPES.sub("", str(message)).split())) or type(message).__name__
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:(") + "…"


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a bad argument is one line (argparse prints the usage above it); subparsers inherit it."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {printable(message)} (see {self.prog} --help)\n")
