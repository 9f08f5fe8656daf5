"""Runs inside litert-torch's own venv (``PIPELINE_LITERT_PYTHON``): a pipeline checkpoint → full-integer int8 .tflite.

Started by ``pipeline.export.torch2litert`` as ``<venv python> litert_worker.py job.json``; it
reads only a pipeline checkpoint (``torch.load(weights_only=True)`` through
``pipeline.models.checkpoint``) and a calibration ``.npy`` (``allow_pickle=False``), never a
pickle of code. The flow is the one litert-torch's own tests use for PT2E static int8
(``litert_torch/_convert/test/test_convert.py``): ``torch.export`` (strict) → ``prepare_pt2e`` with its
``PT2EQuantizer`` (symmetric int8, per-channel weights, HistogramObserver activations) →
calibrate → ``convert_pt2e(fold_quantize=False)`` → ``litert_torch.convert`` with the same
quantizer in ``QuantConfig``. Input and output are NHWC (``to_channel_last_io``), as onnx2tf's.
"""

import json
import sys
from pathlib import Path

# the repository instead of this folder: pipeline.models builds the arch, and no file here may shadow a package
sys.path[0] = str(Path(__file__).resolve().parents[2])


def main(job_path: str) -> int:
    import numpy as np
    import torch

    import litert_torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    from pipeline.models.checkpoint import load_checkpoint

    job = json.loads(Path(job_path).read_text())
    model, _ = load_checkpoint(Path(job["checkpoint"]))
    calib = np.load(job["calibration"], allow_pickle=False).astype(np.float32)  # N×C×H×W, normalised
    torch.manual_seed(0)
    if job.get("channels_last", True):
        model = litert_torch.to_channel_last_io(model, args=[0]).eval()
        calib = np.ascontiguousarray(calib.transpose(0, 2, 3, 1))
    sample = (torch.from_numpy(calib[:1]),)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=job.get("per_channel", True), is_dynamic=False))
    # strict (TorchDynamo) export first: only it records each node's source_fn_stack, which the quantizer's
    # annotators match on (get_source_partitions); after the default non-strict export no residual ADD is
    # annotated and litert-torch leaves them in float (DEQUANTIZE → ADD → QUANTIZE, measured on mobile_half)
    try:
        graph, mode = torch.export.export(model, sample, strict=True).module(), "strict"
    except Exception:  # noqa: BLE001 -- dynamo cannot trace every model; the full-integer check judges the result
        graph, mode = torch.export.export(model, sample).module(), "non-strict"
    graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(len(calib)):  # one image a call: the exported graph is specialised to batch 1
            graph(torch.from_numpy(calib[i : i + 1]))
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    edge = litert_torch.convert(graph, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(job["output"])
    versions = {"litert_torch": litert_torch.__version__, "torch": torch.__version__, "numpy": np.__version__, "torch_export": mode}
    Path(job["output"] + ".versions.json").write_text(json.dumps(versions))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
