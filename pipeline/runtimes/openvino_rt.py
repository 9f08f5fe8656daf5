"""OpenVINO for ``.xml`` IRs, on CPU by default or any device OpenVINO reports (NPU, GPU).

On CPU the inference precision is pinned to f32 (``INFERENCE_PRECISION_HINT``): some CPUs
default to bf16, which would make the fp32 IR disagree with PyTorch; the hint used is
recorded in ``info`` for the report. int8 IRs still run their quantised ops in int8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, one_line
from pipeline.runtimes.base import Runtime

VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


class OpenVINORuntime(Runtime):
    name = "openvino"

    def __init__(self, artifact: Path, threads: int = 0, sidecar: dict | None = None, device: str = "CPU", precision: str | None = None):
        super().__init__(artifact, threads, sidecar)
        import openvino as ov

        from pipeline.runtimes.openvino_core import core as ov_core

        core = ov_core()
        available = list(core.available_devices)
        base = device.split(":")[0].split(".")[0].upper()
        if base not in VIRTUAL_DEVICES and not any(d == device or d.split(".")[0] == base for d in available):
            raise PipelineError(f"openvino: device '{device}' not available here (available: {', '.join(available) or 'none'})")
        try:
            model = core.read_model(str(self.artifact))
        except Exception as exc:
            raise PipelineError(f"{self.artifact}: OpenVINO cannot read it ({one_line(exc)})") from None
        config: dict[str, str] = {}
        if base == "CPU":
            config["INFERENCE_PRECISION_HINT"] = precision or "f32"
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        elif precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise PipelineError(f"{self.artifact}: OpenVINO cannot compile it for {device} ({one_line(exc)})") from None
        self.request = self.compiled.create_infer_request()
        port = model.inputs[0]
        pshape = port.get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else None for d in pshape)
        self.max_batch = self.input_shape[0] if self.input_shape and self.input_shape[0] else None
        self.input_type = port.get_element_type().to_dtype()
        self.info = {"device": device, "version": ov.get_version(), **config,
                     "fake_quantize_ops": sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())}
        if base == "CPU":
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # what the plugin actually applies
            self.info["INFERENCE_PRECISION_HINT"] = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def _prepare(self, x: np.ndarray):
        """An ``ov.Tensor`` over the array's memory: setting it costs no copy and no dispatch."""
        import openvino as ov

        return ov.Tensor(np.ascontiguousarray(x, dtype=self.input_type), shared_memory=True)

    def _run(self, batch) -> np.ndarray:
        # set_input_tensor + a bare infer(): the Python API's dict dispatch and result OVDict cost
        # as much as a small model's inference, and benchmark_app pays neither
        self.request.set_input_tensor(0, batch)
        self.request.infer(share_outputs=True)
        return self.request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self.request = None
        self.compiled = None
