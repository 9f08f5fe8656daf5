"""Stage folders, manifests and cache keys: how a run resumes and how a stage re-runs alone.

A stage writes into ``runs/<name>/<NN_stage>.partial/``; only after its manifest is written
is that folder renamed to ``<NN_stage>/``. So a folder without ``.partial`` is always a
finished stage, and a stage killed half-way leaves only a ``.partial`` that the next run
deletes. ``manifest.json`` records the cache key (hash of the stage's config sections, its
inputs' hashes and the package version), inputs, outputs with sha256, metrics, tool versions
and, for a training stage, where it ran (world size, backend, device, precision).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pipeline
from pipeline.errors import PipelineError, one_line
from pipeline.stages import ARTIFACTS_FILE

MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    """Stable hash of a JSON-able object (sorted keys), used for cache keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file. The file gets the
    mode a plain ``open`` would (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_json_file(path: Path, remedy: str) -> Any:
    """``read_json``, where a file that is not JSON (cut short, another format, not UTF-8) is one line ending in ``remedy``."""
    try:
        return read_json(path)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise PipelineError(f"{path}: not valid JSON ({one_line(exc, 100)}); {remedy}") from None


RERUN_EXPORT = "re-run the export stage (python -m pipeline run <recipe> --from export)"


def read_artifacts(export_dir: Path, *, remedy: str = RERUN_EXPORT) -> dict[str, str]:
    """The export stage's artifact list, {format key: path inside ``export_dir``}. ``remedy`` is the advice when
    it is missing: re-run the stage inside a run (the default), or finish it first for a command reading a run."""
    listing = Path(export_dir) / ARTIFACTS_FILE
    if not listing.is_file():
        raise PipelineError(f"{listing}: missing; {remedy}")
    return read_json(listing)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


_TOOLS = (
    "torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnx2tf", "tensorflow",
    "ai-edge-litert", "openvino", "nncf", "scikit-learn",
)


def tool_versions() -> dict[str, str]:
    """Versions of the toolchain that shaped an artifact (installed ones only)."""
    out = {"python": platform.python_version(), "pipeline": pipeline.__version__}
    for name in _TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Manifest:
    stage: str
    cache_key: str
    inputs: dict[str, str]  # upstream stage -> its output digest
    outputs: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    metrics: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    seconds: float = 0.0
    placement: dict[str, Any] = field(default_factory=dict)  # training stages: world size, backend, device, precision

    @property
    def digest(self) -> str:
        """What downstream stages key on: the outputs' hashes only (not the key, paths or times), so a stage
        rebuilt into identical bytes (a touched dataset file, ``--from``) does not re-run what follows."""
        return hash_json({"outputs": self.outputs})

    def write(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / MANIFEST, self.__dict__)

    @classmethod
    def read(cls, folder: Path) -> Manifest | None:
        path = Path(folder) / MANIFEST
        if not path.is_file():
            return None
        try:
            return cls(**read_json(path))
        except (ValueError, TypeError):
            return None


COMPANIONS = {".xml": (".bin",)}  # files an artifact needs beside it (an OpenVINO IR's weights)


def artifact_size(path: Path) -> int | None:
    """Bytes on disk of an artifact with its companions (an IR's .xml and .bin); None when absent."""
    path = Path(path)
    if not path.is_file():
        return None
    extra = [path.with_suffix(s) for s in COMPANIONS.get(path.suffix, ())]
    return int(sum(p.stat().st_size for p in [path, *extra] if p.is_file()))


def hash_outputs(folder: Path) -> dict[str, str]:
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def verify_outputs(folder: Path, manifest: Manifest) -> bool:
    """A finished stage is reused only if every output it recorded is still there, unchanged."""
    folder = Path(folder)
    return all((folder / rel).is_file() and sha256_file(folder / rel) == digest for rel, digest in manifest.outputs.items())


def now() -> float:
    return time.time()
