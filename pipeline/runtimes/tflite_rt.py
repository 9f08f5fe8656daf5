"""TFLite through LiteRT (``ai_edge_litert``, XNNPACK on CPU) for ``.tflite`` artifacts, fp32 or full-integer.

LiteRT, not the old ``tflite-runtime`` wheel: only LiteRT applies XNNPACK to int8 models
(≈10× faster here, ENVIRONMENT.md). Integer inputs are quantised and outputs dequantised
with the tensors' own scale and zero point, so callers always see float logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, one_line
from pipeline.runtimes.base import Runtime, dequantize, quantize


def interpreter_module():
    """LiteRT's interpreter module, or the older tflite-runtime's where a board's OS forces it (the order of
    ``RUNTIMES['.tflite'].packages``); None if neither is installed."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter  # type: ignore[no-redef]
        except ImportError:
            return None
    return interpreter


def _interpreter_class():
    module = interpreter_module()
    if module is None:
        raise PipelineError("tflite runtime missing: pip install ai-edge-litert")
    return module.Interpreter


class TFLiteRuntime(Runtime):
    name = "tflite"

    def __init__(self, artifact: Path, threads: int = 0, sidecar: dict | None = None, delegates: list | None = None):
        super().__init__(artifact, threads, sidecar)
        Interpreter = _interpreter_class()
        try:
            self.interpreter = Interpreter(
                model_path=str(self.artifact), num_threads=self.threads, experimental_delegates=delegates or None
            )
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            text = " ".join(str(exc).split())
            custom = "custom op" in text.lower()  # a model compiled for an accelerator: its custom ops need the delegate
            hint = " (a compiled model's custom ops need its accelerator's delegate)" if custom else ""
            raise PipelineError(f"{self.artifact}: the TFLite interpreter cannot load it{hint}: {one_line(text)}") from None
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]
        signature = tuple(int(d) for d in self.inp.get("shape_signature", self.inp["shape"]))
        self.input_shape = tuple(None if d < 0 else d for d in signature)
        self.dynamic_batch = signature[0] < 0
        self.max_batch = None if self.dynamic_batch else int(self.inp["shape"][0])
        self.in_q = _quant(self.inp)
        self.out_q = _quant(self.out)
        self.info = {"delegates": len(delegates or []), "input_dtype": np.dtype(self.inp["dtype"]).name,
                     "output_dtype": np.dtype(self.out["dtype"]).name}

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self.inp["dtype"])
        if dtype.kind in "iu":
            if self.in_q is None:
                raise PipelineError(f"{self.artifact.name}: integer input without quantisation parameters")
            return quantize(x, *self.in_q, dtype)
        return x.astype(dtype, copy=False)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.dynamic_batch and tuple(self.inp["shape"]) != batch.shape:
            self.interpreter.resize_tensor_input(self.inp["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.inp = self.interpreter.get_input_details()[0]
        self.interpreter.set_tensor(self.inp["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.out["index"])

    def _finish(self, y: np.ndarray) -> np.ndarray:
        if np.dtype(y.dtype).kind in "iu" and self.out_q is not None:
            return dequantize(y, *self.out_q)
        return np.asarray(y, dtype=np.float32)

    def close(self) -> None:
        self.interpreter = None


def _quant(detail: dict) -> tuple[float, int] | None:
    """Per-tensor (scale, zero_point) of an I/O tensor, None when it is float."""
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []))
    zeros = np.asarray(params.get("zero_points", []))
    if scales.size == 0:
        scale, zero = detail.get("quantization", (0.0, 0))
        return (float(scale), int(zero)) if scale else None
    if scales.size != 1:
        raise PipelineError("per-channel quantised model input/output is not supported; expected one scale")
    return float(scales[0]), int(zeros[0]) if zeros.size else 0
