"""ONNX Runtime (CPU execution provider) for ``.onnx`` artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, one_line
from pipeline.runtimes.base import Runtime


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, artifact: Path, threads: int = 0, sidecar: dict | None = None):
        super().__init__(artifact, threads, sidecar)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.artifact), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise PipelineError(f"{self.artifact}: onnxruntime cannot load it ({one_line(exc)})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.max_batch = self.input_shape[0] if self.input_shape and self.input_shape[0] else None
        self.info = {"provider": "CPUExecutionProvider", "version": ort.__version__}

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None
