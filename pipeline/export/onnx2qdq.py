"""ONNX → int8 ONNX (QDQ) by ONNX Runtime static quantisation, run by the same onnxruntime runtime.

``onnxruntime.quantization.quantize_static`` collects activation ranges (MinMax) on the run's
calibration images, then writes QuantizeLinear/DequantizeLinear pairs around each quantised
op (QDQ format, the layout ORT's CPU and NPU execution providers fuse into int8 kernels):
int8 weights, per output channel, symmetric; uint8 activations. I/O stays float32 NCHW, so
the artifact takes what ``student.onnx`` takes. The model is pre-processed first
(``quant_pre_process``: shape inference and graph optimisation), as the ORT docs advise.
``nodes_to_exclude`` (``export.keep_float``) names nodes of the pre-processed model that ORT leaves in float.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipeline.console import quiet_logs
from pipeline.errors import PipelineError, one_line


def onnx2qdq(onnx_path: Path, out_path: Path, calibration: np.ndarray, *, per_channel: bool = True,
             nodes_to_exclude: Iterable[str] = ()) -> Path:
    """Write the QDQ int8 model of ``onnx_path`` to ``out_path``; ``calibration``: float32 N×C×H×W, normalised."""
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".qdq-") as work:
        prepared = prepare(onnx_path, Path(work) / "prepared.onnx")
        return quantize_prepared(prepared, out_path, calibration, per_channel=per_channel,
                                 nodes_to_exclude=nodes_to_exclude, name=Path(onnx_path).name)


def prepare(onnx_path: Path, prepared: Path) -> Path:
    """``quant_pre_process`` of ``onnx_path`` into ``prepared`` (node names kept: ``student.onnx``'s)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with quiet_logs("root"):  # quant_pre_process logs its own progress on the root logger
            quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:
        raise PipelineError(f"export: onnxruntime quant_pre_process failed on {Path(onnx_path).name}: "
                            f"{one_line(exc, 300)}") from None
    return Path(prepared)


def quantize_prepared(prepared: Path, out_path: Path, calibration: np.ndarray, *, per_channel: bool = True,
                      nodes_to_exclude: Iterable[str] = (), name: str | None = None) -> Path:
    """``quantize_static`` of a pre-processed model: each call calibrates again (what ``auto`` tries many times)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise PipelineError(f"export: calibration must be a non-empty N×C×H×W array, got shape {calibration.shape}")
    input_name, step = model_input(onnx.load(str(prepared), load_external_data=False).graph)

    class _Images(CalibrationDataReader):
        """The calibration images, one model batch at a time (a static batch-1 model gets one image)."""

        def __init__(self):
            self.batches = iter(calibration[i : i + step] for i in range(0, len(calibration) - step + 1, step))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    try:
        with quiet_logs("root"):
            quantize_static(str(prepared), str(out_path), _Images(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            nodes_to_exclude=list(nodes_to_exclude),
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    except Exception as exc:
        raise PipelineError(f"export: onnxruntime quantize_static failed on {name or Path(prepared).name}: "
                            f"{one_line(exc, 300)}") from None
    return Path(out_path)


def model_input(graph) -> tuple[str, int]:
    """(the image input's name, the images one run takes: the static batch, else 1)."""
    initialisers = {i.name for i in graph.initializer}
    image = next(i for i in graph.input if i.name not in initialisers)
    batch = image.type.tensor_type.shape.dim[0]
    return image.name, (batch.dim_value if batch.HasField("dim_value") and batch.dim_value > 0 else 1)
