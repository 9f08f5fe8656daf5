"""What every runtime shares: one ``predict`` contract, layout from the model itself, int8 I/O arithmetic.

``predict(x)`` takes what the PyTorch student takes (float32 N×C×H×W, normalised) and
returns float32 N×K logits, whatever the artifact wants inside: NHWC, uint8/int8 with its
own scale and zero point, a static batch of 1. Torch-free: boards import this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError


def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


class Runtime:
    """Base class; subclasses set ``input_shape`` (the model's, None for dynamic dims) and implement ``_run``."""

    name = "runtime"  # the engine: onnxruntime, tflite, openvino, torch

    def __init__(self, artifact: Path, threads: int = 0, sidecar: dict | None = None):
        self.artifact = Path(artifact)
        self.requested_threads = threads
        self.threads = threads if threads > 0 else all_cores()
        self.sidecar = sidecar
        self.input_shape: tuple[int | None, ...] = ()
        self.max_batch: int | None = 1  # None: any batch in one call
        self.info: dict[str, Any] = {}  # settings worth reporting (precision hint, delegate, device…)

    @property
    def format(self) -> str:
        """Artifact format key (a key of ``pipeline.formats.FORMATS``) by ``detect_format``, the rule ``benchmark`` and the
        board runner use too; a file of no format (a ``.pt`` checkpoint) is its engine's name."""
        from pipeline.formats.detect import detect_format, suffixes

        return detect_format(self.artifact) if self.artifact.suffix.lower() in suffixes() else self.name

    # --- subclass API -------------------------------------------------------------------------
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One call of the engine on a batch already in the model's layout and dtype."""
        raise NotImplementedError

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        """Float NCHW/NHWC batch → the model's input dtype (quantise when it is integer)."""
        return x

    def _finish(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float32)

    # --- public -------------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 N×C×H×W (normalised) → float32 N×K logits."""
        x = self._to_layout(x)
        step = self.max_batch or max(1, len(x))
        outs = [self._finish(self._run(self._prepare(x[i : i + step]))) for i in range(0, len(x), step)]
        if not outs:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([o.reshape(len(o), -1) if o.ndim != 2 else o for o in outs]).astype(np.float32, copy=False)

    def engine_input(self, x: np.ndarray) -> np.ndarray:
        """One batch (at most ``max_batch`` images, float N×C×H×W) as the engine takes it: the model's
        layout and dtype, quantised where the input is integer. Latency timing prepares inputs with
        this *before* the clock starts, then times ``invoke`` alone (as benchmark_model and
        benchmark_app time only the inference)."""
        return self._prepare(self._to_layout(x))

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """The engine call alone on an ``engine_input`` batch; returns its raw output (maybe integer)."""
        return self._run(batch)

    def _to_layout(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise PipelineError(f"{self.artifact.name}: predict expects N×C×H×W images, got shape {x.shape}")
        if resolve_layout(self.input_shape, self.layout_hint(), x.shape, self.artifact) == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x)

    def layout_hint(self) -> str | None:
        return (self.sidecar or {}).get("layout") or ((self.sidecar or {}).get("input") or {}).get("layout")

    def close(self) -> None:
        """Release the engine (sessions hold threads and memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.artifact.name}, format={self.format}, threads={self.threads})"


def resolve_layout(model_shape, hint: str | None, x_shape: tuple[int, ...], artifact: Path) -> str:
    """NCHW or NHWC, decided from the model's own 4-D input shape (and the sidecar's word), never guessed.

    The sidecar's layout wins when given, but must fit the model's shape; without one, the
    image shape C×H×W must fit exactly one of the two layouts (a C=H=W input needs the sidecar).
    """
    c, h, w = x_shape[1:]
    candidates = {"NCHW": (c, h, w), "NHWC": (h, w, c)}

    def fits(layout: str) -> bool:
        if len(model_shape) != 4:
            return False
        return all(m is None or m < 0 or m == d for m, d in zip(model_shape[1:], candidates[layout]))

    if hint in candidates:
        if not fits(hint):
            raise PipelineError(
                f"{artifact.name}: model input {_shape(model_shape)} ({hint}, per its sidecar) does not take images of shape {c}×{h}×{w}"
            )
        return hint
    matching = [lay for lay in candidates if fits(lay)]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        raise PipelineError(f"{artifact.name}: model input {_shape(model_shape)} fits neither NCHW nor NHWC images of shape {c}×{h}×{w}")
    raise PipelineError(f"{artifact.name}: input {_shape(model_shape)} could be NCHW or NHWC; its sidecar ({artifact.name}.json) is needed to tell")


def _shape(shape) -> str:
    return "×".join("?" if d is None or d < 0 else str(d) for d in shape)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Real → integer with the tensor's own parameters: q = clip(round(x / scale) + zero_point)."""
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
