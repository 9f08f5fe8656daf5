"""What a hardware target demands of a model, as data the export, QAT, check and benchmark stages read.

One ``TargetRules`` per target, in its own module (``pipeline/target/<name>.py``); recipes in
``targets/`` name it with ``target.name``. Adding a target whose formats already exist means
one rules module and one line in ``pipeline/target/__init__.py``, nothing else: the export,
QAT, check and benchmark stages read everything they need from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal


@dataclass(frozen=True)
class TargetRules:
    name: str
    description: str
    # quantisation scheme the target executes (QAT observers and int8 export follow it)
    per_channel: bool = True  # per-channel symmetric int8 weights; False = per-tensor
    symmetric_weights: bool = True
    io_dtype: Literal["int8", "uint8", "float32"] = "int8"  # input/output tensors of the int8 artifact
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    # which artifact and runtime represent "the deployed student" for gates and the report
    deploy_artifact: str = "tflite_int8"  # a key of export.formats
    runtime: str = "tflite"  # runtime that runs deploy_artifact on the device
    device: str = "CPU"  # runtime device (OpenVINO: CPU, NPU, GPU)
    threads: int = 0  # default benchmark thread count on the board, 0 = all cores
    # the accelerator the deploy artifact runs on (Edge TPU, NPU); None = the board's CPU. A host CPU
    # latency says nothing about an accelerator: without a device result the report says it was not measured
    accelerator: str | None = None
    # static check of the deployed artifact: (path, rules) -> JSON-able report with at least
    # verdict (str), passed (bool), summary (one line); see pipeline/target/checks.py
    checker: Callable[[Path, TargetRules], dict] | None = field(default=None, compare=False)
    compiler: str | None = None  # vendor compiler called when on PATH (edgetpu_compiler)
    # the board side: the docker/ image that runs the bundle (name without the version tag, which is
    # pipeline.device.remote's IMAGE_VERSION) and the device nodes its accelerator needs in the container
    image: str | None = None
    docker_devices: tuple[str, ...] = ()
    # the recipe to run instead when ``device`` is absent here (OpenVINO NPU -> openvino_cpu.yaml)
    alternative: str | None = None
    # arch prefix -> a variant this target runs fully, suggested when a model is refused
    friendly_archs: dict[str, str] = field(default_factory=dict, compare=False)

    def friendly_alternative(self, arch: str) -> str | None:
        """The variant to suggest for ``arch`` (longest matching prefix), None when there is none or it is itself."""
        prefix = max((p for p in self.friendly_archs if arch.startswith(p)), key=len, default=None)
        suggestion = self.friendly_archs.get(prefix) if prefix else None
        return suggestion if suggestion and suggestion != arch else None
