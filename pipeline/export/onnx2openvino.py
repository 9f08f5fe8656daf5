"""ONNX → OpenVINO IR: fp32 (or fp16) and int8 post-training-quantised by NNCF.

OpenVINO keeps the ONNX layout (NCHW) and float I/O; NNCF inserts FakeQuantize nodes from
statistics of the calibration set (``nncf.quantize``, "performance" preset: symmetric int8 weights
and activations; weights per channel or per tensor as the target's rules say; the calibration set's min/max and no
bias correction, as the other int8 paths calibrate: ``nncf_scheme``),
which the CPU plugin executes in int8.
Each IR lives in its own folder (``<key>/<stem>.xml`` + ``.bin``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.console import NNCF_LOGS, quiet_logs
from pipeline.errors import PipelineError, one_line
from pipeline.formats import primary


def onnx2openvino(
    onnx_path: Path,
    out_dir: Path,
    calibration: np.ndarray,
    fp16: bool = False,
    *,
    fp32: bool | None = None,
    int8: bool = True,
    per_channel: bool = True,
    ignored: Sequence[str] = (),
) -> dict[str, Path]:
    """IRs under ``out_dir``, keyed by the openvino family's format of each precision
    ({"openvino_fp32" | "openvino_fp16": xml, "openvino_int8": xml}).

    ``fp16`` writes the half-precision IR, ``fp32`` (default: when not ``fp16``) the full one;
    both come from one conversion. ``calibration``: float32 N×C×H×W, already normalised, fed
    one image at a time (batch-1 IR). ``per_channel``: the target's weight scheme (``TargetRules.per_channel``).
    ``ignored``: op names NNCF leaves in float (``export.keep_float``).
    """
    import openvino as ov

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise PipelineError(f"export: {onnx_path}: no such ONNX file")
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise PipelineError(f"export: openvino convert_model failed on {onnx_path.name}: {_first_line(exc)}") from None

    stem = onnx_path.stem
    paths: dict[str, Path] = {}
    fp32 = (not fp16) if fp32 is None else fp32
    for half in (False, True):
        key = primary(precision="fp16" if half else "fp32", family="openvino")
        if (fp16 if half else fp32):
            paths[key] = out_dir / key / f"{stem}.xml"
            paths[key].parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(stable_names(model), str(paths[key]), compress_to_fp16=half)  # the default (True) would silently halve fp32
    if int8:
        key = primary(precision="int8", family="openvino")
        paths[key] = out_dir / key / f"{stem}.xml"
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        quantized = quantize_openvino(model, calibration, per_channel=per_channel, ignored=ignored)
        ov.save_model(stable_names(quantized), str(paths[key]), compress_to_fp16=False)
    return paths


_AUTO_NAME = re.compile(r"[A-Z][A-Za-z0-9]*_\d+")  # 'Constant_67756': OpenVINO's process-wide node counter


def stable_names(model):
    """Rename nodes OpenVINO named from its global counter by their place in the graph instead, so the same
    model gives the same XML bytes in every process (and an unchanged export does not re-run what follows)."""
    for i, op in enumerate(model.get_ordered_ops()):
        name = op.get_friendly_name()
        if _AUTO_NAME.fullmatch(name):
            op.set_friendly_name(f"{name.rpartition('_')[0]}_{i}")
    return model


PRESET = "performance"  # nncf.QuantizationPreset: symmetric activations (MIXED would make them asymmetric)
ACTIVATION_RANGES = "MINMAX"  # nncf RangeEstimatorParametersSet: the calibration images' min and max (nncf_scheme)
BIAS_CORRECTION = False  # NNCF's fast bias correction (nncf_scheme says why not)


def nncf_scheme(per_channel: bool):
    """(preset, advanced quantisation parameters) for the target's scheme: what every NNCF call here quantises with,
    plain (``nncf.quantize``) and accuracy-controlled alike.

    The calibration is the other int8 paths' (ONNX Runtime's MinMax, the TFLite converter's): each activation's range
    is the min and max over the calibration images, and no bias is corrected. NNCF's defaults differ twice, and both
    cost accuracy on the images fed one at a time here: per-tensor activation ranges are the *mean* of each image's
    min and max (``MEAN_MINMAX``), which clips what only some images reach, and fast bias correction re-fits each
    layer's bias on those clipped statistics. On the six digits students of ``benchmarks/qat_vs_ptq.py --keep-float``
    the defaults kept 95.3–100 % of fp32's test top-1 where ORT and TFLite kept ≥ 99 %; with these two settings every
    one keeps ≥ 99.6 %."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    weights = QuantizationParameters(per_channel=per_channel)
    return nncf.QuantizationPreset(PRESET), AdvancedQuantizationParameters(
        weights_quantization_params=weights,
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, ACTIVATION_RANGES),
        disable_bias_correction=not BIAS_CORRECTION)


def quantize_openvino(model, calibration: np.ndarray, per_channel: bool = True, ignored: Sequence[str] = ()):
    """NNCF post-training quantisation of an ``ov.Model`` on every calibration image; ``ignored`` ops stay float."""
    import nncf

    from pipeline.runtimes.openvino_core import alternate_stack_kept

    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise PipelineError(f"export: calibration must be a non-empty N×C×H×W array, got shape {calibration.shape}")
    try:
        dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
        preset, advanced = nncf_scheme(per_channel)
        # NNCF's own Cores must not leave this thread a freed signal stack
        with quiet_logs(*NNCF_LOGS), alternate_stack_kept():
            return nncf.quantize(model, dataset, subset_size=len(calibration), preset=preset, advanced_parameters=advanced,
                                 **ignored_scope(ignored))
    except Exception as exc:
        raise PipelineError(f"export: nncf.quantize failed: {_first_line(exc)}") from None


def ignored_scope(names: Sequence[str]) -> dict:
    """``ignored_scope=`` for NNCF's calls: ``names`` (ops' friendly names) in float; unknown names are no error
    (``validate=False``: a pattern's match in one graph may be gone in another)."""
    import nncf

    return {"ignored_scope": nncf.IgnoredScope(names=list(names), validate=False)} if names else {}


def _first_line(exc: BaseException) -> str:
    return one_line(exc, 300)
