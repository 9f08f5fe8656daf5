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
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.runtimes.base import Runtime, all_cores

# suffix -> (module, class); a new runtime is one module and one line here
RUNTIMES: dict[str, tuple[str, str]] = {
    ".pt": ("pipeline.runtimes.torch_rt", "TorchRuntime"),
    ".onnx": ("pipeline.runtimes.onnx_rt", "OnnxRuntime"),
    ".tflite": ("pipeline.runtimes.tflite_rt", "TFLiteRuntime"),
    ".xml": ("pipeline.runtimes.openvino_rt", "OpenVINORuntime"),
}


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
    from pipeline.export.sidecar import read_sidecar

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
    module, cls_name = entry
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except ImportError as exc:
        raise PipelineError(f"{artifact.name}: its runtime is not installed ({exc.name or exc})") from None
    kwargs: dict = {}
    if artifact.suffix.lower() == ".xml":
        kwargs = {"device": device, "precision": precision}
    elif artifact.suffix.lower() == ".tflite":
        kwargs = {"delegates": delegates}
    return cls(artifact, threads, sidecar=read_sidecar(artifact), **kwargs)


__all__ = ["RUNTIMES", "Runtime", "all_cores", "load"]
