"""What a stage reads from outside the run folder, fingerprinted into its cache key.

A stage's key covers its config and its upstream stages' outputs; the files it reads from
elsewhere must be in it too, or replacing ``teacher.checkpoint`` at the same path, or editing
images in place, would reuse a stale stage. Dataset files are fingerprinted by content while
that is cheap (up to ``CONTENT_BUDGET`` bytes per dataset); past that, a large folder is
fingerprinted by each file's name, size and modification time, which catches every edit
except one that keeps both the size and the mtime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from pipeline.artifacts import hash_json, sha256_file

CONTENT_BUDGET = 256 << 20  # bytes of dataset files hashed by content on each run (~0.3 s)


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """sha256 of a file the stage loads by path; a missing file is recorded so its appearance re-runs the stage."""
    path = Path(path).expanduser()
    if not path.is_file():
        return {"path": str(path), "missing": True}
    return {"path": str(path), "sha256": sha256_file(path)}


def files_fingerprint(paths: list[Path], budget: int | None = None) -> str:
    """One hash over many files: by content when their total size fits ``budget`` (default ``CONTENT_BUDGET``),
    else by name, size and mtime."""
    stats = [(Path(p), os.stat(p)) for p in paths]
    by_content = sum(st.st_size for _, st in stats) <= (CONTENT_BUDGET if budget is None else budget)
    entries = [[str(p), st.st_size, sha256_file(p) if by_content else st.st_mtime_ns] for p, st in stats]
    return hash_json({"by_content": by_content, "files": entries})


def dataset_fingerprint(data) -> dict[str, Any]:
    """The files ``data.dataset`` is read from (``pipeline.data.sources.SOURCE_FILES``), fingerprinted."""
    from pipeline.data.sources import SOURCE_FILES

    root = Path(data.root).expanduser() if data.root else None
    files = SOURCE_FILES[data.dataset](root)
    return {"files": len(files), "fingerprint": files_fingerprint(files)}


def artifacts_fingerprint(paths: list[str]) -> list[dict[str, Any]]:
    """The files ``python -m pipeline benchmark`` was given, an OpenVINO IR with its weights (.bin)."""
    out = []
    for p in paths:
        out.append(file_fingerprint(p))
        if Path(p).suffix.lower() == ".xml":
            out.append(file_fingerprint(Path(p).expanduser().with_suffix(".bin")))
    return out


def _student_checkpoint(cfg) -> dict[str, Any]:
    return {"checkpoint": file_fingerprint(cfg.student.checkpoint)} if cfg.student.checkpoint else {}


# stage -> what it reads from outside the run folder (config is already in every key)
EXTERNAL: dict[str, Callable[[Any], dict[str, Any]]] = {
    "data": lambda cfg: {"dataset": dataset_fingerprint(cfg.data)},
    "teacher": lambda cfg: {"checkpoint": file_fingerprint(cfg.teacher.checkpoint)} if cfg.teacher.checkpoint else {},
    "distill": _student_checkpoint,
    "student": _student_checkpoint,  # python -m pipeline export MODEL
    "artifacts": lambda cfg: {"artifacts": artifacts_fingerprint(cfg.benchmark.artifacts)},  # python -m pipeline benchmark
    "report": lambda cfg: {"run_name": cfg.run_dir.name},  # the report names its run folder (a copied run is renamed)
}


def external_inputs(cfg, stage: str) -> dict[str, Any]:
    """Fingerprints of what ``stage`` reads from outside the run, for its cache key ({} when nothing)."""
    fn = EXTERNAL.get(stage)
    return fn(cfg) if fn else {}
