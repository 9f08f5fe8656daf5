"""TFLite int8 that misses the 99 % rule: calibrate again on more images, and (where the target runs it) convert with the
other weight scheme; the best try is kept only if it wins on validation.

Of the options that act on a full-integer TFLite model's worst layers, two are the exporter's to try. The calibration
set: the converter takes each activation's range from the calibration images (min/max); with few images a layer's
range can miss values that the data does reach, and the per-layer report shows them as *clipped*. The weight scheme:
the target's rule (``TargetRules.per_channel``) is the first conversion's, and where the target executes the other one
too (``TargetRules.other_weight_scheme``: the Edge TPU compiler takes per-tensor int8 weights as well as per-channel)
it is a second option. Keeping a layer in float is not one: tflite_int8 is full-integer on every target (the Edge TPU
compiler would run all ops from the first float one on the CPU).

So when tflite_int8 keeps < 99 % of tflite_fp32's top-1 on the validation split, onnx2tf runs again, once per try, each
changing one thing against the first conversion so that its decision reads as that one thing's effect:

* the target's scheme calibrated on ``FACTOR``× as many images (the recorded subset, then the next training images);
* the other scheme on the recorded subset, where the target allows it (it runs even when no more images are left).

At most two more onnx2tf children. Each try's int8 is judged against the first int8 on the validation split
(``pipeline/decision.py``: the paired 95 % interval of its top-1 minus the first's); the best try (highest top-1, the
earlier on a tie) replaces the first pair only if its interval lies above 0, else the first stays. Every try is in
the record's ``tried``, with its scheme, images, top-1 and decision. The decision is made on the validation split,
never the test split, which only judges. Weights from QAT were trained under the target's scheme; the other scheme is
tried on them as well, and is kept only when it wins on validation like any try.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.decision import accuracy, decision, supported_clause, unsupported, untried
from pipeline.export.common import WEIGHT_SCHEMES
from pipeline.export.fidelity import hits, keeps_int8_rule, top1

FACTOR = 4  # calibration images in the second conversion, × the recorded subset's
MAX_IMAGES = 2048


def recalibrate_tflite_int8(onnx_path: Path, made: dict[str, Path], calibration: np.ndarray,
                            more_images: Callable[[int], np.ndarray], validation: tuple[np.ndarray, np.ndarray], *,
                            io_dtype: str, per_channel: bool, other_weight_scheme: bool = False, mode: str = "auto",
                            int8_hits: np.ndarray | None = None, keep_float: list[str] | None = None) -> dict:
    """Judge onnx2tf's int8 in ``made`` ({"tflite_fp32": …, "tflite_int8": …}) on ``validation``; when it keeps < 99 % of
    fp32's top-1 (and ``mode`` is "auto"), convert again calibrated on ``FACTOR``× the images (``more_images(n)``: n
    normalised training images) and, with ``other_weight_scheme``, with the other weight scheme than ``per_channel``'s;
    put the best pair in place if its int8 is better beyond doubt. ``int8_hits``: that int8's per-image correctness on
    ``validation`` where it is known already (the auto converter choice measured it); ``keep_float``: the
    ``export.keep_float`` patterns the tries keep in float too. Returns the record for the sidecar: the top-level
    ``scheme``, ``calibration_images`` and ``val_accuracy`` are the int8 in place."""
    from pipeline.formats import primary
    from pipeline.export.onnx2tflite import onnx2tflite

    int8_key, fp32_key = primary(precision="int8", family="tflite"), primary(precision="fp32", family="tflite")
    x_val, y_val = (np.asarray(a) for a in validation)
    scheme = WEIGHT_SCHEMES[bool(per_channel)]
    if len(y_val) == 0:
        return {"mode": mode, "used": False, "scheme": scheme, "decision": untried(0),
                "reason": "no validation images to judge int8 on"}
    fp32_acc = top1(made[fp32_key], x_val, y_val)
    int8_hits = hits(made[int8_key], x_val, y_val) if int8_hits is None else np.asarray(int8_hits, bool)
    int8_acc = accuracy(int8_hits)
    record = {"mode": mode, "used": False, "validation_images": int(len(y_val)), "fp32_val_accuracy": fp32_acc,
              "scheme": scheme, "calibration_images": int(len(calibration)), "val_accuracy": int8_acc,
              "decision": untried(len(y_val))}
    keeps, missed = keeps_int8_rule(int8_acc, fp32_acc)
    if keeps:
        return {**record, "reason": missed}
    if mode != "auto":
        return {**record, "reason": f"{missed}; export.tflite_recalibration: {mode}"}
    tries, lacking = _tries(np.asarray(calibration, np.float32), more_images, bool(per_channel), other_weight_scheme)
    if not tries:
        return {**record, "reason": f"{missed}; {lacking}"}
    from pipeline.export.tflite_keep_float import FloatRequest

    with tempfile.TemporaryDirectory(prefix=".recalibration-", dir=Path(made[int8_key]).parent) as tmp:
        tried, pairs = [], []
        for i, (channel, images) in enumerate(tries):
            request = FloatRequest(list(keep_float)) if keep_float else None
            again = onnx2tflite(onnx_path, Path(tmp) / str(i), images, io_dtype, channel, strict=False, keep_float=request)
            again_hits = hits(again[int8_key], x_val, y_val)
            tried.append({"scheme": WEIGHT_SCHEMES[channel], "calibration_images": int(len(images)),
                          "calibration_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
                          "val_accuracy": accuracy(again_hits), "decision": decision(again_hits, int8_hits), "adopted": False})
            pairs.append(again)
        said = f"{missed}: " + "; ".join([lacking] * bool(lacking) + [
            f"{_what(t, len(calibration))}, {int8_acc:.2%} → {t['val_accuracy']:.2%}" for t in tried])
        best = max(range(len(tried)), key=lambda i: tried[i]["val_accuracy"])  # max keeps the earlier on a tie
        chosen = tried[best]
        if chosen["decision"]["supported"]:
            for key in (fp32_key, int8_key):
                shutil.move(pairs[best][key], made[key])
            chosen["adopted"] = True
            return {**record, "used": True, "tried": tried, "scheme": chosen["scheme"],
                    "calibration_images": chosen["calibration_images"], "val_accuracy": chosen["val_accuracy"],
                    "decision": chosen["decision"],
                    "reason": f"{said}; {_what(chosen, len(calibration))} kept ({chosen['val_accuracy'] / fp32_acc:.2%} of "
                              f"fp32): {supported_clause(chosen['decision'])}"}
    best_said = f"the best, {_what(chosen, len(calibration))}: " if len(tried) > 1 else ""
    return {**record, "tried": tried, "decision": chosen["decision"],
            "reason": f"{said}; {best_said}{unsupported(chosen['decision'], 'the first conversion')}"}


def _tries(calibration: np.ndarray, more_images: Callable[[int], np.ndarray], per_channel: bool,
           other_weight_scheme: bool) -> tuple[list[tuple[bool, np.ndarray]], str]:
    """The conversions to try, as (per_channel, calibration images), each changing one thing against the first; and
    why the more-images one is missing, where it is."""
    tries, lacking = [], ""
    wanted = min(FACTOR * len(calibration), MAX_IMAGES)
    larger = np.concatenate([calibration, more_images(wanted)])[:wanted].astype(np.float32)
    if len(larger) > len(calibration):
        tries.append((per_channel, larger))
    else:
        lacking = "no more training images to calibrate on"
    if other_weight_scheme:
        tries.append((not per_channel, calibration))
    return tries, lacking


def _what(tried: dict, first_images: int) -> str:
    """A try in a reason: what it changed against the first conversion."""
    if tried["calibration_images"] != first_images:
        return f"calibrated again on {tried['calibration_images']} images"
    return f"{tried['scheme']} weights"
