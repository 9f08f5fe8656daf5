"""PyTorch for pipeline checkpoints (``.pt``): the reference every other artifact is compared with.

Imported only for ``.pt`` files, so the other runtimes stay usable where torch is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.runtimes.base import Runtime


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self, artifact: Path, threads: int = 0, sidecar: dict | None = None, model: torch.nn.Module | None = None, batch: int = 256):
        super().__init__(artifact, threads, sidecar)
        if model is None:
            from pipeline.models.checkpoint import load_checkpoint

            model, self.meta = load_checkpoint(self.artifact)
        else:
            self.meta = {}
        self.model = model.eval()
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # process-wide (torch has no per-model setting): restored by close()
        in_channels = self.meta.get("in_channels")
        size = (self.meta.get("preprocess") or {}).get("image_size")
        self.input_shape = (None, in_channels, size, size) if in_channels and size else (None, None, None, None)
        self.max_batch = batch
        self.info = {"version": torch.__version__}

    def layout_hint(self) -> str:
        return "NCHW"

    def _prepare(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x)

    def _run(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.model(batch).float().numpy()

    def close(self) -> None:
        self.model = None
        if self._threads_before is not None:  # training after a benchmark must not inherit its thread count
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
