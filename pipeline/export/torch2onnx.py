"""PyTorch → ONNX: the one graph every other format is converted from.

The legacy TorchScript exporter (``dynamo=False``) writes a single self-contained file with
static shapes, which is what onnx2tf and OpenVINO convert most reliably (see
ENVIRONMENT.md). Batch is fixed at 1: edge runtimes and the Edge TPU compiler want static
shapes, and the runtimes loop over a batch.
"""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError, one_line
from pipeline.export.fidelity import logits_match

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def torch2onnx(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    path: Path,
    opset: int = 17,
    *,
    check_inputs: np.ndarray | None = None,
    rtol: float = 1e-3,
) -> Path:
    """Export ``model`` (in eval mode) for a 1×C×H×W float input named "input" → 1×K "logits".

    The file is checked by ``onnx.checker`` and run in ONNX Runtime on ``check_inputs`` (N×C×H×W real
    images; a seeded random image when None, e.g. for an untrained model); its logits must match
    PyTorch's within ``rtol`` of the logits' scale (``logits_match``) or a PipelineError says by how much.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.eval()
    if check_inputs is None or len(check_inputs) == 0:
        check_inputs = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0)).numpy()
    examples = torch.from_numpy(np.ascontiguousarray(check_inputs, dtype=np.float32))
    try:
        with torch.no_grad(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice: chosen on purpose (module docstring)
            torch.onnx.export(
                model,
                (examples[:1],),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise PipelineError(f"export: torch.onnx.export failed (opset {opset}): {_first_line(exc)}") from None
    finally:
        model.train(was_training)
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as exc:
        raise PipelineError(f"export: onnx.checker rejected {path.name}: {_first_line(exc)}") from None

    with torch.no_grad():
        expected = model.eval()(examples).numpy()
    model.train(was_training)
    got = np.concatenate([run_onnx(path, examples[i : i + 1].numpy()) for i in range(len(examples))])
    ok, diff, scale = logits_match(got, expected, rtol)
    if not ok:
        raise PipelineError(
            f"export: onnxruntime output of {path.name} differs from PyTorch on {len(examples)} test images "
            f"(max |Δlogit| = {diff:.3g} > {rtol:g} × logit scale {scale:.3g}); raise export.fp32_rtol if this is rounding"
        )
    return path


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """One ONNX Runtime call on CPU (used to verify an export)."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    except Exception as exc:
        raise PipelineError(f"export: onnxruntime cannot run {Path(path).name}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return one_line(exc, 300)
