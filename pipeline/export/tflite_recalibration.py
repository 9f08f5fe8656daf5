"""TFLite int8 that misses the 99 % rule: calibrate again on more images, keep it only if it wins on validation.

Of the options that act on a full-integer TFLite model's worst layers, one is the exporter's to
try: the calibration set. The converter takes each activation's range from the calibration
images (min/max); with few images a layer's range can miss values that the data does reach, and
the per-layer report shows them as *clipped*. The weight scheme is the target's rule (per-channel
or per-tensor, ``TargetRules.per_channel``), not an option, and keeping a layer in float is not
one either: tflite_int8 is full-integer on every target (the Edge TPU compiler would run all ops
from the first float one on the CPU).

So when tflite_int8 keeps < 99 % of tflite_fp32's top-1 on the validation split, onnx2tf runs
again with ``FACTOR``× as many calibration images (the recorded subset, then the next training
images), and the new pair replaces the old one only if its int8 is better on validation beyond doubt: the paired
95 % interval of its top-1 minus the first int8's lies above 0 (``pipeline/decision.py``, the record's ``decision``).
The decision is made on the validation split, never the test split, which only judges.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.decision import accuracy, decision, supported_clause, unsupported, untried
from pipeline.export.fidelity import hits, keeps_int8_rule, top1

FACTOR = 4  # calibration images in the second conversion, × the recorded subset's
MAX_IMAGES = 2048


def recalibrate_tflite_int8(onnx_path: Path, made: dict[str, Path], calibration: np.ndarray,
                            more_images: Callable[[int], np.ndarray], validation: tuple[np.ndarray, np.ndarray], *,
                            io_dtype: str, per_channel: bool, mode: str = "auto", int8_hits: np.ndarray | None = None,
                            keep_float: list[str] | None = None) -> dict:
    """Judge onnx2tf's int8 in ``made`` ({"tflite_fp32": …, "tflite_int8": …}) on ``validation``; when it keeps < 99 % of
    fp32's top-1 (and ``mode`` is "auto"), convert again calibrated on ``FACTOR``× the images (``more_images(n)``: n
    normalised training images) and put the pair in place if that int8 is better beyond doubt. ``int8_hits``: that int8's
    per-image correctness on ``validation`` where it is known already (the auto converter choice measured it); ``keep_float``: the
    ``export.keep_float`` patterns the second conversion keeps in float too. Returns the record for the sidecar."""
    from pipeline.formats import primary
    from pipeline.export.onnx2tflite import onnx2tflite

    int8_key, fp32_key = primary(precision="int8", family="tflite"), primary(precision="fp32", family="tflite")
    x_val, y_val = (np.asarray(a) for a in validation)
    if len(y_val) == 0:
        return {"mode": mode, "used": False, "decision": untried(0), "reason": "no validation images to judge int8 on"}
    fp32_acc = top1(made[fp32_key], x_val, y_val)
    int8_hits = hits(made[int8_key], x_val, y_val) if int8_hits is None else np.asarray(int8_hits, bool)
    int8_acc = accuracy(int8_hits)
    record = {"mode": mode, "used": False, "validation_images": int(len(y_val)), "fp32_val_accuracy": fp32_acc,
              "calibration_images": int(len(calibration)), "val_accuracy": int8_acc, "decision": untried(len(y_val))}
    keeps, missed = keeps_int8_rule(int8_acc, fp32_acc)
    if keeps:
        return {**record, "reason": missed}
    if mode != "auto":
        return {**record, "reason": f"{missed}; export.tflite_recalibration: {mode}"}
    wanted = min(FACTOR * len(calibration), MAX_IMAGES)
    larger = np.concatenate([calibration, more_images(wanted)])[:wanted].astype(np.float32)
    if len(larger) <= len(calibration):
        return {**record, "reason": f"{missed}; no more training images to calibrate on"}
    with tempfile.TemporaryDirectory(prefix=".recalibration-", dir=Path(made[int8_key]).parent) as tmp:
        from pipeline.export.tflite_keep_float import FloatRequest

        request = FloatRequest(list(keep_float)) if keep_float else None
        again = onnx2tflite(onnx_path, Path(tmp), larger, io_dtype, per_channel, strict=False, keep_float=request)
        again_hits = hits(again[int8_key], x_val, y_val)
        again_acc = accuracy(again_hits)
        tried = {"calibration_images": int(len(larger)), "calibration_sha256": hashlib.sha256(larger.tobytes()).hexdigest(),
                 "val_accuracy": again_acc}
        judged = decision(again_hits, int8_hits)
        said = f"{missed}: calibrated again on {len(larger)} images, {int8_acc:.2%} → {again_acc:.2%}"
        if judged["supported"]:
            for key in (fp32_key, int8_key):
                shutil.move(again[key], made[key])
            return {**record, "used": True, "tried": tried, "calibration_images": int(len(larger)), "val_accuracy": again_acc,
                    "decision": judged, "reason": f"{said} ({again_acc / fp32_acc:.2%} of fp32); {supported_clause(judged)}"}
    return {**record, "tried": tried, "decision": judged, "reason": f"{said}; {unsupported(judged, 'the first conversion')}"}
