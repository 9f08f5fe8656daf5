"""OpenVINO int8 that keeps the 99 % rule: NNCF's accuracy-aware quantisation when plain PTQ misses it.

``nncf.quantize`` quantises every layer it can; when one layer cannot take int8 (an outlier channel
that sets a whole tensor's range, a layer whose error the rest of the network amplifies) the model
loses accuracy with no recourse. ``nncf.quantize_with_accuracy_control`` quantises the same way,
then ranks the quantised layers by how much each one costs on a validation set and reverts the
worst ones to float, one group at a time, until the drop is within ``max_drop``
(NNCF's "Quantization with accuracy control", docs.openvino.ai). Here the drop is relative and
``max_drop`` = 1 − ``MIN_INT8_RETAINED`` (0.01), the same rule the export's fidelity check holds
every int8 artifact to.

The decision is made on the validation split (never the test split, which only judges), and only
when plain PTQ misses the rule there: a model that already keeps 99 % gets the plain int8 IR. The
restored IR replaces the plain one only when it is better beyond doubt: the paired 95 % interval of
its top-1 minus plain int8's lies above 0 (``pipeline/decision.py``), the record's ``decision``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.console import NNCF_LOGS, quiet_logs
from pipeline.decision import accuracy, decision, supported_clause, unsupported, untried
from pipeline.errors import PipelineError, one_line
from pipeline.export.fidelity import MIN_INT8_RETAINED, keeps_int8_rule

MAX_DROP = round(1 - MIN_INT8_RETAINED, 6)  # relative: int8 top-1 ≥ 99 % of fp32's


def validation_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 of an ``ov.Model`` (or compiled model) on float32 N×C×H×W images, one at a time (batch-1 IR)."""
    return accuracy(validation_hits(model, x, y))


def validation_hits(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image correctness of an ``ov.Model`` (or compiled model) on float32 N×C×H×W images (batch-1 IR)."""
    import openvino as ov

    from pipeline.runtimes.openvino_core import core

    compiled = model if isinstance(model, ov.CompiledModel) else core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.array([np.argmax(compiled(x[i : i + 1])[0]) == y[i] for i in range(len(y))], bool)


def restore_openvino_int8(onnx_path: Path, int8_xml: Path, calibration: np.ndarray, validation: tuple[np.ndarray, np.ndarray],
                          mode: str = "auto", per_channel: bool = True, ignored: Sequence[str] = ()) -> dict:
    """Judge the plain int8 IR at ``int8_xml`` on ``validation``; when it keeps < 99 % of fp32's top-1 there (and ``mode``
    is "auto"), replace it in place by NNCF's accuracy-controlled quantisation of ``onnx_path``. Returns the record for the
    sidecar and the manifest: what was measured, what was done, and why. ``ignored``: ops kept in float by
    ``export.keep_float`` (they stay float here too)."""
    import openvino as ov

    from pipeline.export.onnx2openvino import stable_names
    from pipeline.runtimes.openvino_core import core as ov_core

    x_val, y_val = (np.asarray(a) for a in validation)
    if len(y_val) == 0:
        return {"mode": mode, "used": False, "decision": untried(0), "reason": "no validation images to judge int8 on"}
    core = ov_core()
    fp32 = ov.convert_model(str(onnx_path))
    fp32_acc = validation_accuracy(fp32, x_val, y_val)
    plain_hits = validation_hits(core.read_model(str(int8_xml)), x_val, y_val)
    plain_acc = accuracy(plain_hits)
    record = {"mode": mode, "used": False, "max_drop": MAX_DROP, "drop_type": "relative", "validation_images": int(len(y_val)),
              "fp32_val_accuracy": fp32_acc, "plain_val_accuracy": plain_acc, "decision": untried(len(y_val))}
    keeps, missed = keeps_int8_rule(plain_acc, fp32_acc, "plain int8")
    if keeps:
        return {**record, "reason": missed}
    if mode != "auto":
        return {**record, "reason": f"{missed}; export.openvino_accuracy_control: {mode}"}
    try:
        quantized = quantize_with_accuracy_control(fp32, calibration, x_val, y_val, per_channel, ignored)
    except PipelineError as exc:  # the plain int8 IR stays, and the fidelity check judges it as before
        return {**record, "reason": f"{missed}; accuracy control failed, plain int8 kept", "error": str(exc)}
    restored_hits = validation_hits(quantized, x_val, y_val)
    record.update(restored_val_accuracy=accuracy(restored_hits), decision=decision(restored_hits, plain_hits))
    if not record["decision"]["supported"]:  # the plain IR stays where it is
        return {**record, "reason": f"{missed}; accuracy control reached {record['restored_val_accuracy']:.2%}, "
                                    f"{unsupported(record['decision'], 'plain int8')}"}
    ov.save_model(stable_names(quantized), str(int8_xml), compress_to_fp16=False)
    kept = float_layers(core.read_model(str(int8_xml)), fp32)
    return {**record, "used": True, "float_layers": kept,
            "reason": f"{missed}: nncf.quantize_with_accuracy_control kept {len(kept)} layer(s) in float; "
                      f"{supported_clause(record['decision'])}"}


def quantize_with_accuracy_control(model, calibration: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, per_channel: bool = True,
                                   ignored: Sequence[str] = ()):
    """``nncf.quantize_with_accuracy_control`` of an ``ov.Model``: the calibration set for statistics, the validation
    split (top-1, per image) to rank and restore layers, relative ``MAX_DROP``."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from pipeline.export.onnx2openvino import ignored_scope, nncf_scheme
    from pipeline.runtimes.openvino_core import alternate_stack_kept

    calibration = np.asarray(calibration, dtype=np.float32)

    def top1(compiled, items) -> tuple[float, list[float]]:
        hits = [float(np.argmax(compiled(image)[0]) == label) for image, label in items]
        return (float(np.mean(hits)) if hits else 0.0), hits

    preset, advanced = nncf_scheme(per_channel)
    try:
        # NNCF's own Cores must not leave this thread a freed signal stack
        with quiet_logs(*NNCF_LOGS), alternate_stack_kept():
            return nncf.quantize_with_accuracy_control(
                model,
                calibration_dataset=nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))]),
                validation_dataset=nncf.Dataset([(x_val[i : i + 1], int(y_val[i])) for i in range(len(y_val))]),
                validation_fn=top1,
                max_drop=MAX_DROP,
                drop_type=nncf.DropType.RELATIVE,
                subset_size=len(calibration),
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(num_ranking_workers=1),
                preset=preset,
                advanced_quantization_parameters=advanced,
                **ignored_scope(ignored),
            )
    except Exception as exc:
        raise PipelineError(f"export: nncf.quantize_with_accuracy_control failed: {one_line(exc, 300)}") from None


def float_layers(quantized, fp32) -> list[str]:
    """Convolutions and MatMuls of ``fp32`` whose weights in ``quantized`` are neither behind a FakeQuantize nor stored
    as int8 (NNCF compresses quantised weights to an int8 constant × scale): the layers the restorer kept in float,
    named as in the ONNX graph."""
    wanted = {op.get_friendly_name() for op in fp32.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul")}
    kept = []
    for op in quantized.get_ordered_ops():
        if op.get_friendly_name() not in wanted:
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in ("Convert", "Reshape", "Transpose", "Multiply", "Subtract") and node.get_input_size():
            node = node.input_value(0).get_node()
        if not (node.get_type_name() == "FakeQuantize" or str(node.get_output_element_type(0)) in ("<Type: 'int8_t'>", "<Type: 'uint8_t'>")):
            kept.append(op.get_friendly_name())
    return sorted(kept)
