"""ONNX → int8 ONNX (QDQ) by ONNX Runtime static quantisation, run by the same onnxruntime runtime.

``onnxruntime.quantization.quantize_static`` collects activation ranges (MinMax) on the run's
calibration images, then writes QuantizeLinear/DequantizeLinear pairs around each quantised
op (QDQ format, the layout ORT's CPU and NPU execution providers fuse into int8 kernels):
int8 weights, per output channel, symmetric; uint8 activations. I/O stays float32 NCHW, so
the artifact takes what ``student.onnx`` takes. The model is pre-processed first
(``quant_pre_process``: shape inference and graph optimisation), as the ORT docs advise.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, one_line


def onnx2qdq(onnx_path: Path, out_path: Path, calibration: np.ndarray, *, per_channel: bool = True) -> Path:
    """Write the QDQ int8 model of ``onnx_path`` to ``out_path``; ``calibration``: float32 N×C×H×W, normalised."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise PipelineError(f"export: calibration must be a non-empty N×C×H×W array, got shape {calibration.shape}")
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initialisers = {i.name for i in graph.initializer}
    input_name = next(i.name for i in graph.input if i.name not in initialisers)
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    step = batch.dim_value if batch.HasField("dim_value") and batch.dim_value > 0 else 1

    class _Images(CalibrationDataReader):
        """The calibration images, one model batch at a time (a static batch-1 model gets one image)."""

        def __init__(self):
            self.batches = iter(calibration[i : i + step] for i in range(0, len(calibration) - step + 1, step))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    quiet = logging.getLogger("root")  # quant_pre_process logs its own progress on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".qdq-") as work:
            prepared = Path(work) / "prepared.onnx"
            quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(out_path), _Images(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    except PipelineError:
        raise
    except Exception as exc:
        raise PipelineError(f"export: onnxruntime quantize_static failed on {onnx_path.name}: {one_line(exc, 300)}") from None
    finally:
        quiet.setLevel(level)
    return out_path
