"""``python -m pipeline list targets|methods|formats|models [PATTERN]`` and ``python -m pipeline --version``.

Each list reads the registry users pick from by name (``pipeline.target.TARGETS``,
``pipeline.distill.methods.METHODS``, ``pipeline.formats.FORMATS``, the model zoo and its
libraries), filtered by an fnmatch pattern as ``timm.list_models('*mobilenet*')`` is. Versions come
from installed package metadata: nothing heavy is imported to print them.
"""

from __future__ import annotations

import fnmatch
from importlib import metadata
from typing import Callable

# the toolchain whose versions decide what an export or a benchmark does (distribution names)
TOOLS = ("torch", "onnx2tf", "tensorflow", "ai-edge-litert", "openvino", "nncf", "onnxruntime")


def versions() -> str:
    """The package's version, then each tool's ('not installed' when absent), one per line."""
    import pipeline

    lines = [f"edge-pipeline {pipeline.__version__}"]
    for name in TOOLS:
        try:
            lines.append(f"  {name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"  {name} (not installed)")
    return "\n".join(lines)


def _targets() -> dict[str, str]:
    from pipeline.target import TARGETS

    return {name: rules.description for name, rules in TARGETS.items()}


def _methods() -> dict[str, str]:
    from pipeline.distill.methods import METHODS

    return {name: f"{m.loss.rsplit(':', 1)[-1]}; default weights " + ", ".join(f"{k} {v:g}" for k, v in m.defaults.items())
            for name, m in METHODS.items()}


def _formats() -> dict[str, str]:
    from pipeline.formats import FORMATS

    return {key: f"{f.label}: {f.file}" for key, f in FORMATS.items() if f.exported}  # what export.formats takes


def _models(pattern: str | None) -> dict[str, str]:
    """The zoo; with a pattern, the libraries' models too (``timm:<name>``), matched with or without their prefix."""
    from pipeline.models import LIBRARIES, ZOO, library

    found = {name: "zoo" for name in ZOO}
    if pattern is not None:
        for prefix in LIBRARIES:
            found.update({f"{prefix}:{name}": prefix for name in sorted(library(prefix).names())})
    return found


LISTS: dict[str, Callable[[str | None], dict[str, str]]] = {
    "targets": lambda pattern: _targets(),
    "methods": lambda pattern: _methods(),
    "formats": lambda pattern: _formats(),
    "models": _models,
}


def list_command(what: str, pattern: str | None = None) -> list[str]:
    """Lines 'name  description' of the ``what`` registry whose names match ``pattern`` (all when None)."""
    entries = LISTS[what](pattern)
    shown = {name: text for name, text in entries.items()
             if pattern is None or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name.split(":", 1)[-1], pattern)}
    width = max((len(n) for n in shown), default=0)
    lines = [f"{name:<{width}}  {text}" for name, text in shown.items()]
    if what == "models" and pattern is None:
        lines.append("(and torchvision:<name>, timm:<name>: give a pattern to list them, e.g. '*mobilenet*')")
    return lines
