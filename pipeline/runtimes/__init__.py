"""One interface over every runtime: ``load(artifact).predict(x) -> logits``, chosen by file suffix.

=========  ====================================  ===========================
suffix     runtime                               module
=========  ====================================  ===========================
.pt        PyTorch (pipeline checkpoint)         ``torch_rt`` (only one importing torch)
.onnx      ONNX Runtime, CPU                     ``onnx_rt``
.tflite    LiteRT interpreter, XNNPACK           ``tflite_rt``
.xml       OpenVINO (device: CPU, NPU, GPU…)     ``openvino_rt``
=========  ====================================  ===========================

Every ``Runtime`` takes float32 N×C×H×W normalised images and returns float32 N×K logits;
layout, integer I/O and batch-1 models are handled inside. This package imports no toolchain
at import time, and no torch at all unless a ``.pt`` is loaded: the on-device runner uses it
on boards without torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.runtimes.base import Runtime, all_cores


@dataclass(frozen=True)
class RuntimeEntry:
    """What the host, the board runner and the reports need to know about one runtime."""

    name: str  # the Runtime's ``name``: the format table's runtime key and the report's engine name
    module: str  # imported only when an artifact of this kind is loaded
    cls: str
    packages: tuple[str, ...]  # the distributions that provide it, preferred first (the engine version is the first found)

    def version(self) -> str | None:
        for package in self.packages:
            try:
                return metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
        return None


# suffix -> runtime; a new runtime is one module and one line here
RUNTIMES: dict[str, RuntimeEntry] = {
    ".pt": RuntimeEntry("torch", "pipeline.runtimes.torch_rt", "TorchRuntime", ("torch",)),
    ".onnx": RuntimeEntry("onnxruntime", "pipeline.runtimes.onnx_rt", "OnnxRuntime", ("onnxruntime",)),
    # LiteRT (ai-edge-litert) first; the old tflite-runtime wheel where a board's OS forces it
    ".tflite": RuntimeEntry("tflite", "pipeline.runtimes.tflite_rt", "TFLiteRuntime", ("ai-edge-litert", "tflite-runtime")),
    ".xml": RuntimeEntry("openvino", "pipeline.runtimes.openvino_rt", "OpenVINORuntime", ("openvino",)),
}
BY_NAME: dict[str, RuntimeEntry] = {e.name: e for e in RUNTIMES.values()}


def engine_name(runtime) -> str:
    """'tflite 2.1.0', 'openvino 2026.4.1-…': the engine and its version (the runtime's own, else its package's)."""
    name = str(getattr(runtime, "name", type(runtime).__name__))
    version = (getattr(runtime, "info", None) or {}).get("version")
    if not version and name in BY_NAME:
        version = BY_NAME[name].version()
    return f"{name} {version}" if version else name


def load(
    artifact: Path,
    threads: int = 0,
    *,
    device: str = "CPU",
    delegates: list | None = None,
    precision: str | None = None,
) -> Runtime:
    """A ready runtime for ``artifact`` (``threads`` 0 = all cores).

    ``device`` and ``precision`` (INFERENCE_PRECISION_HINT; default f32 on CPU) apply to
    OpenVINO; ``delegates`` (e.g. the Edge TPU delegate) to TFLite. The artifact's sidecar
    (``<file>.json``), when present, supplies its format key and input layout.
    """
    from pipeline.formats.sidecar import read_sidecar

    artifact = Path(artifact)
    entry = RUNTIMES.get(artifact.suffix.lower())
    if entry is None:
        raise PipelineError(f"{artifact}: no runtime for '{artifact.suffix}' files (known: {', '.join(RUNTIMES)})")
    if not artifact.is_file():
        raise PipelineError(f"{artifact}: no such artifact")
    if threads < 0:
        raise PipelineError(f"threads: must be 0 (all cores) or more, got {threads}")
    if device.upper() != "CPU" and artifact.suffix.lower() != ".xml":
        raise PipelineError(f"{artifact.name}: device '{device}' applies to OpenVINO IRs (.xml) only")
    if delegates and artifact.suffix.lower() != ".tflite":
        raise PipelineError(f"{artifact.name}: delegates apply to .tflite models only")
    try:
        cls = getattr(importlib.import_module(entry.module), entry.cls)
    except ImportError as exc:
        raise PipelineError(f"{artifact.name}: its runtime is not installed ({exc.name or exc})") from None
    kwargs: dict = {}
    if artifact.suffix.lower() == ".xml":
        kwargs = {"device": device, "precision": precision}
    elif artifact.suffix.lower() == ".tflite":
        kwargs = {"delegates": delegates}
    return cls(artifact, threads, sidecar=read_sidecar(artifact), **kwargs)


__all__ = ["BY_NAME", "RUNTIMES", "Runtime", "RuntimeEntry", "all_cores", "engine_name", "load"]
