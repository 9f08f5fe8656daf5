"""Export stage: the student in the formats of ``export.formats`` (rows of ``pipeline/formats/__init__.py``:
ONNX fp32/int8, TFLite fp32/int8, OpenVINO fp32/fp16/int8), each checked against PyTorch.

The stage composes; the families convert: ``pipeline/export/walk.py`` calls each row's converter in table order
(``onnx_family``, ``qdq``, ``tflite``, ``openvino``), then ``verify`` holds every artifact to its fidelity rule.

Reads ``04_qat/student.pt`` (``export.source: qat``; plain float weights learned under
fake-quant) or ``03_distill/student.pt`` (``03_student/student.pt`` or ``student.onnx``, the
given model of ``python -m pipeline export``), and ``01_data/calibration.npy`` for int8
calibration. Writes the artifacts with their sidecars and ``artifacts.json``
({format: relative path}, what the benchmark and target stages read). Every artifact is run
on the whole test split by its runtime; a fidelity miss is printed loudly and recorded
(``passed: false``) but does not stop the stage: the report shows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import atomic_write_json, read_json, sha256_file
from pipeline.data.calibration import load_calibration
from pipeline.errors import PipelineError
from pipeline.export.common import ExportInputs, ExportSettings, ExportState
from pipeline.formats import FORMATS, primary
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import ExportMetrics
from pipeline.stages import ARTIFACTS_FILE, GUARD_FILE, STUDENT_CHECKPOINT, STUDENT_ONNX, TEACHER_CHECKPOINT

TFLITE_INT8, OPENVINO_INT8 = primary(precision="int8", family="tflite"), primary(precision="int8", family="openvino")
# the int8 remedies' records (keep_float: {format key: record}; pipeline/export/openvino.py, tflite_converter.py,
# tflite.py), in the metrics' order; typed in ExportMetrics, shown by the report's pipeline/report/decisions.py
REMEDIES = ("keep_float", "openvino_accuracy_control", "tflite_converter", "tflite_recalibration")

CHECK_IMAGES = 16  # test images the ONNX export is checked on against PyTorch (before the full fidelity run)


def source_checkpoint(ctx) -> tuple[Path, str, str]:
    """The student weights to export, the stage they come from, and why (one sentence for the report)."""
    folder = Path(ctx.inputs["distill"])
    if ctx.command == "export":  # python -m pipeline export MODEL: the user's model, as given (03_student)
        given = folder / STUDENT_CHECKPOINT if (folder / STUDENT_CHECKPOINT).is_file() else folder / STUDENT_ONNX
        return given, "student", f"the given model ({ctx.cfg.student.checkpoint}): python -m pipeline export, nothing trained"
    choice = ctx.cfg.export.source
    qat = Path(ctx.inputs["qat"]) if ctx.inputs.get("qat") is not None else None
    guard = read_json(qat / GUARD_FILE) if qat is not None and (qat / GUARD_FILE).is_file() else None
    if choice == "auto":
        if guard is None:
            choice, reason = "distill", "distilled weights: no QAT stage decision to follow"
        else:
            choice, reason = guard["export"], f"{guard['reason']} (export.source: auto)"
    else:
        reason = f"{'QAT' if choice == 'qat' else 'distilled'} weights: export.source: {choice}"
    if choice == "qat":
        if qat is None or not (qat / STUDENT_CHECKPOINT).is_file():
            raise PipelineError("export.source: qat, but the QAT stage wrote no student.pt; re-run it (--from qat)")
        return qat / STUDENT_CHECKPOINT, "qat", reason
    path = folder / STUDENT_CHECKPOINT
    if not path.is_file():
        raise PipelineError(f"export: {path} missing; re-run the distill stage (python -m pipeline run <recipe> --from distill)")
    return path, "distill", reason


def run(ctx: StageContext) -> ExportMetrics:
    from pipeline.console import console
    from pipeline.export.verify import fidelity, teacher_onnx
    from pipeline.export.walk import export_formats

    cfg = ctx.cfg.export
    inputs, source_reason, (x, y) = export_inputs(ctx, console)
    state = ExportState(console=console, class_names=inputs.class_names)
    teacher_pt = Path(ctx.inputs["teacher"]) / TEACHER_CHECKPOINT if "teacher" in ctx.inputs else None
    teacher: dict = {}
    with_teacher = cfg.teacher_onnx and teacher_pt is not None and teacher_pt.is_file()
    # the teacher's ONNX is made while onnx2tf converts in its child process
    export_formats(inputs, state, cfg.formats,
                   meanwhile=(lambda: teacher.update(row=teacher_onnx(inputs, state, teacher_pt, x, y))) if with_teacher else None)
    state.layer_error = {k: state.layer_error[k] for k in sorted(state.layer_error, key=lambda k: FORMATS[k].family != "tflite")}
    listed = {k: str(state.paths[k].relative_to(inputs.out)) for k in cfg.formats if k in state.paths}
    atomic_write_json(inputs.out / ARTIFACTS_FILE, listed)

    rows, source_acc = fidelity(inputs, state, listed, x, y)
    return _metrics(ctx, inputs, state, rows, source_acc, source_reason, int(len(y)), teacher.get("row"))


def export_inputs(ctx, console) -> tuple[ExportInputs, str, tuple[np.ndarray, np.ndarray]]:
    """What every family converts from: the weights, the data's facts, calibration, the target's int8 scheme and the
    ``export`` settings (the validation split only when an auto choice is judged on it); why these weights; the test
    split."""
    from pipeline.data import load_split, read_split_info
    from pipeline.target import TARGETS

    cfg = ctx.cfg.export
    data_dir = Path(ctx.inputs["data"])
    info = read_split_info(data_dir)
    input_shape = tuple(int(d) for d in info["input_shape"])
    calibration, calib_path = load_calibration(data_dir, input_shape)
    source, source_stage, source_reason = source_checkpoint(ctx)
    console.print(f"  → weights: {source_reason}")
    x, y = load_split(data_dir, "test")
    accuracy_control = cfg.openvino_accuracy_control if OPENVINO_INT8 in cfg.formats else "off"
    tflite_int8 = TFLITE_INT8 in cfg.formats
    judged_on_validation = (accuracy_control == "auto" or cfg.keep_float == "auto"
                            or (tflite_int8 and "auto" in (cfg.tflite_converter, cfg.tflite_recalibration)))
    settings = ExportSettings(
        opset=cfg.opset, fp32_rtol=cfg.fp32_rtol, check_images=x[:CHECK_IMAGES],
        layer_error_images=cfg.layer_error_images, accuracy_control=accuracy_control,
        validation=load_split(data_dir, "val") if judged_on_validation else None, tflite_converter=cfg.tflite_converter,
        tflite_recalibration=cfg.tflite_recalibration if tflite_int8 else "off",
        more_images=lambda n: load_split(data_dir, "train", limit=n)[0],
        keep_float="auto" if cfg.keep_float == "auto" else tuple(cfg.keep_float))
    rules = TARGETS[ctx.cfg.target.name]
    inputs = ExportInputs(ctx.out, source, source_stage, input_shape, int(info["num_classes"]), info["preprocess"],
                          info["class_names"], calibration, calib_path, rules.per_channel, rules.io_dtype, console, settings,
                          other_weight_scheme=rules.other_weight_scheme)
    return inputs, source_reason, (x, y)


def _metrics(ctx, inputs: ExportInputs, state: ExportState, rows: dict[str, dict], source_acc: float, source_reason: str,
             images: int, teacher: dict | None) -> ExportMetrics:
    from pipeline.target import TARGETS

    failed = [k for k, r in rows.items() if not r["passed"]]
    deploy = TARGETS[ctx.cfg.target.name].deploy_artifact
    return ExportMetrics.model_validate({
        "source_accuracy": source_acc,
        **({f"{deploy}_accuracy": rows[deploy]["accuracy"]} if deploy in rows else {}),
        "artifacts": len(rows),
        "failed": len(failed),
        "passed": not failed,
        "failed_artifacts": failed,
        "source": inputs.source_stage,
        "source_reason": source_reason,
        "source_sha256": sha256_file(inputs.source),
        "test_images": images,
        "fidelity": rows,
        "dead_channels_zeroed": sum(state.dead_channels.values()),
        **({"teacher_onnx": teacher} if teacher else {}),
        **({"layer_error": state.layer_error} if state.layer_error else {}),
        **{name: state.records[name] for name in REMEDIES if state.records.get(name)},
        "seconds": {k: round(v, 2) for k, v in state.timings.items()},
    })
