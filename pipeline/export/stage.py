"""Export stage: the student in the formats of ``export.formats`` (rows of ``pipeline/formats/__init__.py``:
ONNX fp32/int8, TFLite fp32/int8, OpenVINO fp32/fp16/int8), each checked against PyTorch.

Reads ``04_qat/student.pt`` (``export.source: qat``; plain float weights learned under
fake-quant) or ``03_distill/student.pt`` (``03_student/student.pt`` or ``student.onnx``, the
given model of ``python -m pipeline export``), and ``01_data/calibration.npy`` for int8
calibration. Writes the artifacts with their sidecars and ``artifacts.json``
({format: relative path}, what the benchmark and target stages read). Every artifact is run
on the whole test split by its runtime; a fidelity miss is printed loudly and recorded
(``passed: false``) but does not stop the stage: the report shows it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from pipeline.artifacts import artifact_size, atomic_write_json, read_json, sha256_file
from pipeline.errors import PipelineError
from pipeline.formats import EXPORT_SOURCE, FORMATS, format_keys, get_format, primary
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import ExportMetrics
from pipeline.stages import (ARTIFACTS_FILE, CALIBRATION_FILE, GUARD_FILE, STUDENT_CHECKPOINT, STUDENT_ONNX, TEACHER_CHECKPOINT,
                             TEACHER_ONNX)

# the converters' outputs the per-layer error and OpenVINO's accuracy control work on
TFLITE_INT8, TFLITE_FP32 = primary(precision="int8", family="tflite"), primary(precision="fp32", family="tflite")
OPENVINO_INT8 = primary(precision="int8", family="openvino")

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


def load_calibration(data_dir: Path, input_shape: tuple[int, ...]) -> tuple[np.ndarray, Path]:
    """The data stage's calibration subset (float32 N×C×H×W, normalised); missing or empty is the user's to fix."""
    path = Path(data_dir) / CALIBRATION_FILE
    fix = "re-run the data stage (python -m pipeline run <recipe> --from data)"
    if not path.is_file() or path.stat().st_size == 0:
        raise PipelineError(f"export: calibration subset {path} is missing/empty: {fix}")
    try:
        calib = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PipelineError(f"export: calibration subset {path} is unreadable ({exc}): {fix}") from None
    if calib.ndim != 4 or len(calib) == 0:
        raise PipelineError(f"export: calibration subset {path} is missing/empty: array of shape {calib.shape}; {fix}")
    if tuple(calib.shape[1:]) != tuple(input_shape):
        raise PipelineError(f"export: calibration subset {path} has images {calib.shape[1:]}, the data is {tuple(input_shape)}: {fix}")
    return np.ascontiguousarray(calib, dtype=np.float32), path


def run(ctx: StageContext) -> ExportMetrics:
    from pipeline.data import load_split, read_split_info
    from pipeline.console import console

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
    judged_on_validation = accuracy_control == "auto" or (tflite_int8 and "auto" in (cfg.tflite_converter, cfg.tflite_recalibration))
    validation = load_split(data_dir, "val") if judged_on_validation else None
    job = _Export(ctx.out, source, input_shape, info, calibration, calib_path, rules=_rules(ctx), console=console,
                  fp32_rtol=cfg.fp32_rtol, check_images=x[:CHECK_IMAGES], layer_error_images=cfg.layer_error_images,
                  accuracy_control=accuracy_control, validation=validation,
                  converter=cfg.tflite_converter, recalibration=cfg.tflite_recalibration if tflite_int8 else "off",
                  more_images=lambda n: load_split(data_dir, "train", limit=n)[0])

    job.onnx(cfg.opset, source_stage)  # always: every other format is converted from it
    tflite_keys = format_keys(family="tflite", among=cfg.formats)
    # one converter call per family makes all its requested formats; onnx2tf (a child process, mostly one busy core)
    # runs while this process makes the others and the teacher's ONNX, which need nothing from it
    job.start_onnx2tf(tflite_keys)
    try:
        job.onnx_int8([k for k in format_keys(family="onnx", among=cfg.formats) if FORMATS[k].precision == "int8"])
        job.openvino(format_keys(family="openvino", among=cfg.formats))
        teacher_pt = Path(ctx.inputs["teacher"]) / TEACHER_CHECKPOINT if "teacher" in ctx.inputs else None
        teacher = job.teacher_onnx(teacher_pt, cfg.opset, x, y) if cfg.teacher_onnx and teacher_pt and teacher_pt.is_file() else None
        job.tflite(tflite_keys)
    finally:
        job.join_onnx2tf()  # a failure above must not leave the child writing into the stage folder
    job.layer_error = {k: job.layer_error[k] for k in sorted(job.layer_error, key=lambda k: FORMATS[k].family != "tflite")}
    listed = {k: str(job.paths[k].relative_to(job.out)) for k in cfg.formats if k in job.paths}
    atomic_write_json(job.out / ARTIFACTS_FILE, listed)

    rows, source_acc = job.fidelity(listed, x, y)

    failed = [k for k, r in rows.items() if not r["passed"]]
    deploy = job.rules.deploy_artifact
    return {
        "source_accuracy": source_acc,
        **({f"{deploy}_accuracy": rows[deploy]["accuracy"]} if deploy in rows else {}),
        "artifacts": len(rows),
        "failed": len(failed),
        "passed": not failed,
        "failed_artifacts": failed,
        "source": source_stage,
        "source_reason": source_reason,
        "source_sha256": sha256_file(source),
        "test_images": int(len(y)),
        "fidelity": rows,
        "dead_channels_zeroed": sum(job.dead_channels.values()),
        **({"teacher_onnx": teacher} if teacher else {}),
        **({"layer_error": job.layer_error} if job.layer_error else {}),
        **({"openvino_accuracy_control": job.accuracy_record} if job.accuracy_record else {}),
        **({"tflite_converter": job.converter_record} if job.converter_record else {}),
        **({"tflite_recalibration": job.recalibration_record} if job.recalibration_record else {}),
        "seconds": {k: round(v, 2) for k, v in job.timings.items()},
    }


def _rules(ctx):
    from pipeline.target import TARGETS

    return TARGETS[ctx.cfg.target.name]


class _Export:
    """The conversions of one stage run, in order; each writes its artifacts and their sidecars."""

    def __init__(self, out, source, input_shape, info, calibration, calib_path, *, rules, console, fp32_rtol, check_images,
                 layer_error_images: int = 0, accuracy_control: str = "off", validation: tuple | None = None,
                 converter="onnx2tf", recalibration: str = "off", more_images=None):
        self.converter, self.model, self.meta = converter, None, None  # tflite_converter; the weights, once loaded
        self.converter_record: dict | None = None  # tflite_converter auto: what was compared and chosen
        # tflite_recalibration: "auto" | "off", more_images(n) → n more normalised training images; the decision's record
        self.recalibration, self.more_images, self.recalibration_record = recalibration, more_images, None
        self.out, self.source, self.input_shape, self.rules, self.console = Path(out), source, input_shape, rules, console
        self.fp32_rtol, self.check_images = fp32_rtol, check_images
        self.calibration, self.calib_path = calibration, calib_path
        self.preprocess, self.class_names = info["preprocess"], info["class_names"]
        self.num_classes = int(info["num_classes"])
        self.paths: dict[str, Path] = {}
        self.dead_channels: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.layer_error_images, self.layer_error = layer_error_images, {}  # format key → its per-layer summary
        self.accuracy_control, self.validation, self.accuracy_record = accuracy_control, validation, None
        self._onnx2tf: tuple[threading.Thread, dict] | None = None  # start_onnx2tf's conversion, until tflite takes it

    def _step(self, label: str) -> float:
        self.console.print(f"  → {label}…")
        return time.perf_counter()

    def _done(self, key: str, started: float) -> None:
        self.timings[key] = time.perf_counter() - started
        self.console.print(f"    [dim]done in {self.timings[key]:.1f}s[/dim]")

    def _sidecar(self, key: str, path: Path, io: tuple[dict, dict], extra: dict | None = None, *, from_weights: bool = False) -> None:
        from pipeline.formats.sidecar import write_sidecar

        made_from = EXPORT_SOURCE if from_weights else get_format(key).source  # from_weights: litert-torch skips ONNX
        sources = {"checkpoint": self.source} if made_from == EXPORT_SOURCE else {"checkpoint": self.source, "onnx": self.paths["onnx"]}
        write_sidecar(path, format=key, input=io[0], output=io[1], preprocess=self.preprocess, class_names=self.class_names,
                      sources=sources, extra=extra)
        self.paths[key] = path

    def _calibration_record(self, tool: str, **more) -> dict:
        return {"tool": tool, **more, "calibration_images": len(self.calibration), "calibration_sha256": sha256_file(self.calib_path)}

    def onnx(self, opset: int, source_stage: str) -> None:
        from pipeline.export.dead_channels import neutralize_dead_channels
        from pipeline.formats.sidecar import nchw_io
        from pipeline.export.torch2onnx import torch2onnx
        from pipeline.models.checkpoint import load_checkpoint

        if self.source.suffix == ".onnx":  # the user's own ONNX (export command): every format converts from it as given
            import shutil

            import onnx

            path = self.out / FORMATS["onnx"].file
            shutil.copyfile(self.source, path)
            graph = onnx.load(str(path), load_external_data=False).graph
            self._sidecar("onnx", path, nchw_io(self.input_shape, self.num_classes, graph.input[0].name, graph.output[0].name),
                          {"given": True})
            return
        model, meta = load_checkpoint(self.source)
        self.class_names = meta.get("class_names") or self.class_names
        self.dead_channels = neutralize_dead_channels(model.eval())
        self.model, self.meta = model, meta  # what every converter from the PyTorch weights starts from
        if self.dead_channels:
            self.console.print(f"  {sum(self.dead_channels.values())} dead channels (BN variance ≈ 0) in "
                               f"{len(self.dead_channels)} layers zeroed before export, so BN folding cannot inflate int8 scales")
        t = self._step(f"ONNX (opset {opset}) from {source_stage}/{self.source.name}")
        path = torch2onnx(model, self.input_shape, self.out / FORMATS["onnx"].file, opset=opset,
                          check_inputs=self.check_images, rtol=self.fp32_rtol)
        self._done("onnx", t)
        self._sidecar("onnx", path, nchw_io(self.input_shape, self.num_classes),
                      {"dead_channels_zeroed": self.dead_channels} if self.dead_channels else None)

    def onnx_int8(self, keys: list[str]) -> None:
        """ONNX Runtime static quantisation of the ONNX model: QDQ, int8 weights per the target's scheme."""
        if not keys:
            return
        import onnx

        from pipeline.export.onnx2qdq import onnx2qdq
        from pipeline.formats.sidecar import nchw_io

        scheme = "per-channel" if self.rules.per_channel else "per-tensor"
        for key in keys:
            t = self._step(f"ONNX int8 via onnxruntime quantize_static (QDQ, {scheme} weights, {len(self.calibration)} calibration images)")
            path = onnx2qdq(self.paths["onnx"], self.out / FORMATS[key].file, self.calibration, per_channel=self.rules.per_channel)
            self._done(key, t)
            record = self._calibration_record("onnxruntime.quantization.quantize_static", format="QDQ", scheme=scheme,
                                              weights="int8 symmetric", activations="uint8 asymmetric (MinMax)")
            graph = onnx.load(str(path), load_external_data=False).graph
            io = nchw_io(self.input_shape, self.num_classes, graph.input[0].name, graph.output[0].name)
            self._sidecar(key, path, io, {"quantization": record})

    def start_onnx2tf(self, keys: list[str]) -> None:
        """Start the onnx2tf conversion ``tflite`` needs (fp32 and full-integer in one child process) on a thread that
        waits for the child, so this process can convert the other formats meanwhile; nothing when it is not needed."""
        converter = self.converter if TFLITE_INT8 in keys else "onnx2tf"
        if not keys or (converter == "litert_torch" and len(keys) == 1):
            return
        from pipeline.export.onnx2tflite import onnx2tflite

        scheme = "per-channel" if self.rules.per_channel else "per-tensor"
        self.console.print(f"  → TFLite via onnx2tf ({scheme} int8, {self.rules.io_dtype} I/O, {len(self.calibration)} "
                           "calibration images), in a child process beside the other formats…")
        result: dict = {"started": time.perf_counter()}

        def convert() -> None:
            try:
                result["made"] = onnx2tflite(self.paths["onnx"], self.out, self.calibration, self.rules.io_dtype,
                                             self.rules.per_channel, strict=False)
            except BaseException as exc:  # raised again by wait_onnx2tf, in the stage's own thread
                result["error"] = exc
            result["seconds"] = time.perf_counter() - result["started"]

        thread = threading.Thread(target=convert, name="onnx2tf", daemon=True)
        thread.start()
        self._onnx2tf = (thread, result)

    def join_onnx2tf(self) -> None:
        """Wait for a conversion still running (after a failure elsewhere: its own outcome is not raised over that)."""
        if self._onnx2tf is not None:
            self._onnx2tf[0].join()
            self._onnx2tf = None

    def wait_onnx2tf(self) -> dict[str, Path]:
        """The files ``start_onnx2tf``'s conversion made ({} if none was started); its exception, if it failed."""
        if self._onnx2tf is None:
            return {}
        thread, result = self._onnx2tf
        self._onnx2tf = None
        thread.join()
        if "error" in result:
            raise result["error"]
        self.timings["tflite"] = result["seconds"]
        self.console.print(f"  → TFLite via onnx2tf [dim]done in {result['seconds']:.1f}s[/dim]")
        return result["made"]

    def tflite(self, keys: list[str]) -> None:
        """fp32 and full-integer come out of one onnx2tf conversion (``start_onnx2tf``); the unrequested one is dropped.
        tflite_int8 comes from litert-torch instead when ``export.tflite_converter`` says so, or when it wins on
        validation (``auto``)."""
        if not keys:
            return
        from pipeline.formats.sidecar import tflite_io

        scheme = "per-channel" if self.rules.per_channel else "per-tensor"
        io_dtype = self.rules.io_dtype
        int8_key = TFLITE_INT8
        converter = self.converter if int8_key in keys else "onnx2tf"
        if self._onnx2tf is None and (converter != "litert_torch" or len(keys) > 1):
            self.start_onnx2tf(keys)  # a caller that did not start it: convert now
        made: dict[str, Path] = self.wait_onnx2tf()
        if converter == "auto":  # may put litert-torch's model in place of onnx2tf's int8 (with its sidecar)
            converter = self._pick_converter(made[int8_key], scheme, io_dtype)
        if converter == "onnx2tf" and int8_key in keys and self.recalibration == "auto" and self.validation is not None:
            self._recalibrate(made, io_dtype)
        if converter == "onnx2tf" and int8_key in keys and self.layer_error_images:  # before the fp32 twin may be dropped
            self._layer_error(int8_key, made[int8_key], made[TFLITE_FP32])
        for key, path in made.items():
            if key == int8_key and converter == "litert_torch":
                if self.converter == "litert_torch":
                    path.unlink()  # made next, from the weights
                continue
            if key not in keys:
                path.unlink()
                continue
            extra = self._onnx2tf_int8_record(scheme, io_dtype) if FORMATS[key].precision == "int8" else None
            self._sidecar(key, path, tflite_io(path), extra)
        if self.converter == "litert_torch" and int8_key in keys:
            self._litert(int8_key, scheme, io_dtype)

    def _onnx2tf_int8_record(self, scheme: str, io_dtype: str) -> dict:
        """The sidecar's extra fields of onnx2tf's tflite_int8: how it was quantised, and what auto decided about it."""
        quantization = self._calibration_record("onnx2tf", scheme=scheme, io_dtype=io_dtype)
        recalibration = self.recalibration_record or {}
        if recalibration.get("used"):  # calibrated on the recorded subset and more
            tried = recalibration["tried"]
            quantization.update(calibration_images=tried["calibration_images"], calibration_sha256=tried["calibration_sha256"],
                                calibration="the recorded subset, then the next training images")
        return {"quantization": quantization, "converter": "onnx2tf", **self._converter_choice(),
                **({"recalibration": recalibration} if recalibration else {})}

    def _recalibrate(self, made: dict[str, Path], io_dtype: str) -> None:
        from rich.markup import escape

        from pipeline.export.tflite_recalibration import recalibrate_tflite_int8

        t = self._step(f"TFLite int8 vs fp32 on {len(self.validation[1])} validation images (recalibration: auto)")
        measured = (self.converter_record or {}).get("val_accuracy", {}).get("onnx2tf")  # by the auto converter choice
        self.recalibration_record = recalibrate_tflite_int8(self.paths["onnx"], made, self.calibration, self.more_images,
                                                            self.validation, io_dtype=io_dtype, per_channel=self.rules.per_channel,
                                                            int8_acc=measured)
        self._done("tflite_recalibration", t)
        style = "yellow" if "tried" in self.recalibration_record else "dim"
        self.console.print(f"    [{style}]{escape(self.recalibration_record['reason'])}[/{style}]")

    def _converter_choice(self) -> dict:
        return {"converter_choice": self.converter_record} if self.converter_record else {}

    def _litert_unusable(self, io_dtype: str) -> str | None:
        """Why litert-torch cannot make this model's tflite_int8 here (None: it can)."""
        from pipeline.export.torch2litert import litert_python

        if self.model is None:
            return "litert_torch converts PyTorch weights, and the given model is ONNX"
        if io_dtype != "int8":
            return f"litert_torch makes int8 I/O only, the target wants {io_dtype}"
        try:
            litert_python()
        except PipelineError as exc:
            return str(exc).removeprefix("export: ")
        return None

    def _pick_converter(self, onnx2tf_int8: Path, scheme: str, io_dtype: str) -> str:
        """``tflite_converter: auto``: litert-torch's int8 beside onnx2tf's, top-1 of both on the validation split; the
        better one stays at ``onnx2tf_int8`` (a tie keeps onnx2tf, the default). Either way the choice is recorded."""
        import shutil
        import tempfile

        from rich.markup import escape

        from pipeline.export.fidelity import top1

        x_val, y_val = self.validation if self.validation is not None else (None, np.zeros(0))
        why_not = self._litert_unusable(io_dtype) or (None if len(y_val) else "no validation images to choose by")
        if why_not:
            self.converter_record = {"mode": "auto", "chosen": "onnx2tf", "reason": f"litert-torch not tried: {why_not}"}
            self.console.print(f"    [dim]tflite_converter auto → onnx2tf ({escape(self.converter_record['reason'])})[/dim]")
            return "onnx2tf"
        t = self._step(f"tflite_int8 converter (auto): litert-torch beside onnx2tf, int8 top-1 on {len(y_val)} validation images")
        with tempfile.TemporaryDirectory(prefix=".litert-candidate-", dir=self.out) as tmp:
            candidate = Path(tmp) / onnx2tf_int8.name
            try:
                versions = self._litert_convert(candidate)
            except PipelineError as exc:
                self.converter_record = {"mode": "auto", "chosen": "onnx2tf", "reason": f"litert-torch failed: {exc}"}
                self._done("tflite_converter", t)
                self.console.print(f"    [yellow]{escape(self.converter_record['reason'])}[/yellow]")
                return "onnx2tf"
            accuracy = {"onnx2tf": top1(onnx2tf_int8, x_val, y_val), "litert_torch": top1(candidate, x_val, y_val)}
            chosen = "litert_torch" if accuracy["litert_torch"] > accuracy["onnx2tf"] else "onnx2tf"
            tie = " (a tie keeps onnx2tf)" if accuracy["litert_torch"] == accuracy["onnx2tf"] else ""
            self.converter_record = {
                "mode": "auto", "chosen": chosen, "validation_images": int(len(y_val)), "val_accuracy": accuracy,
                "reason": f"int8 top-1 on validation: onnx2tf {accuracy['onnx2tf']:.2%}, litert-torch {accuracy['litert_torch']:.2%}{tie}"}
            if chosen == "litert_torch":
                shutil.move(candidate, onnx2tf_int8)
                self._litert_sidecar(TFLITE_INT8, onnx2tf_int8, versions, scheme, io_dtype)
        self._done("tflite_converter", t)
        self.console.print(f"    → {chosen}: {escape(self.converter_record['reason'])}")
        return chosen

    def _litert(self, key: str, scheme: str, io_dtype: str) -> None:
        """tflite_int8 by litert-torch (``export.tflite_converter: litert_torch``)."""
        why_not = self._litert_unusable(io_dtype)
        if why_not:
            raise PipelineError(f"export.tflite_converter: {why_not}; use onnx2tf or auto")
        t = self._step(f"TFLite int8 via litert-torch (PT2E, {scheme}, int8 I/O, {len(self.calibration)} calibration images)")
        path = self.out / FORMATS[key].file
        versions = self._litert_convert(path)
        self._done("tflite_litert", t)
        self._litert_sidecar(key, path, versions, scheme, io_dtype)

    def _litert_convert(self, path: Path) -> dict:
        """litert-torch's int8 .tflite at ``path`` from the same (dead-channel-neutralised) weights that went to ONNX;
        the tool versions it ran with."""
        import tempfile

        from pipeline.export.torch2litert import tool_versions, torch2litert
        from pipeline.models.checkpoint import save_checkpoint

        with tempfile.TemporaryDirectory(prefix=".litert-src-", dir=self.out) as tmp:
            source = Path(tmp) / "student.pt"
            save_checkpoint(source, self.model, self.meta)
            torch2litert(source, path, self.calibration, per_channel=self.rules.per_channel)
        versions = tool_versions(path)
        path.with_name(path.name + ".versions.json").unlink(missing_ok=True)
        return versions

    def _litert_sidecar(self, key: str, path: Path, versions: dict, scheme: str, io_dtype: str) -> None:
        from pipeline.formats.sidecar import tflite_io

        record = self._calibration_record("litert_torch.quantize.pt2e_quantizer", scheme=scheme, io_dtype=io_dtype)
        self._sidecar(key, path, tflite_io(path), {"quantization": record, "converter": "litert_torch",
                                                   "converter_versions": versions, **self._converter_choice()},
                      from_weights=True)

    def _layer_error(self, key: str, artifact: Path, reference: Path) -> None:
        from pipeline.export.layer_error import layer_errors, short_name, write_layer_error
        from pipeline.export.layer_error_openvino import openvino_layer_errors

        compare = openvino_layer_errors if FORMATS[key].family == "openvino" else layer_errors
        t = self._step(f"int8 error per layer ({key} vs {reference.name}, {min(len(self.calibration), self.layer_error_images)} "
                       "calibration images)")
        info = self.layer_error[key] = write_layer_error(artifact, reference, self.calibration, self.out, self.layer_error_images,
                                                         compare=compare)
        self._done(f"layer_error_{key}", t)
        worst = info.get("worst")
        if worst:
            self.console.print(f"    worst: {short_name(worst['name'])} ({worst['op']}) {worst['sqnr_db']:.1f} dB SQNR, "
                               f"{info['layers']} layers → {info['file']}")
        else:
            self.console.print(f"    [yellow]no per-layer numbers: {info.get('error', 'no layer compared')}[/yellow]")

    def openvino(self, keys: list[str]) -> None:
        if not keys:
            return
        from pipeline.export.onnx2openvino import PRESET, onnx2openvino
        from pipeline.formats.sidecar import nchw_io

        wanted = {FORMATS[k].precision for k in keys}
        t = self._step(f"OpenVINO IR ({', '.join(keys)}){'; NNCF int8 calibration' if 'int8' in wanted else ''}")
        made = onnx2openvino(self.paths["onnx"], self.out, self.calibration, fp16="fp16" in wanted,
                             fp32="fp32" in wanted, int8="int8" in wanted, per_channel=self.rules.per_channel)
        self._done("openvino", t)
        if OPENVINO_INT8 in made and self.accuracy_control == "auto" and self.validation is not None:
            self._accuracy_control(made[OPENVINO_INT8])
        if OPENVINO_INT8 in made and self.layer_error_images:  # the IR as deployed: after accuracy control
            self._layer_error(OPENVINO_INT8, made[OPENVINO_INT8], self.paths["onnx"])
        for key, xml in made.items():
            extra: dict = {"runtime_hints": {"INFERENCE_PRECISION_HINT": "f32"}}
            if FORMATS[key].precision == "int8":
                used = bool(self.accuracy_record and self.accuracy_record["used"])
                extra["quantization"] = self._calibration_record(
                    "nncf.quantize_with_accuracy_control" if used else "nncf.quantize", preset=PRESET,
                    scheme="per-channel" if self.rules.per_channel else "per-tensor",
                    **({"accuracy_control": self.accuracy_record} if self.accuracy_record else {}))
            self._sidecar(key, xml, nchw_io(self.input_shape, self.num_classes), extra)

    def _accuracy_control(self, int8_xml: Path) -> None:
        from rich.markup import escape

        from pipeline.export.accuracy_control import restore_openvino_int8

        t = self._step(f"OpenVINO int8 vs fp32 on {len(self.validation[1])} validation images (accuracy control: auto)")
        self.accuracy_record = restore_openvino_int8(self.paths["onnx"], int8_xml, self.calibration, self.validation, "auto",
                                                     per_channel=self.rules.per_channel)
        self._done("openvino_accuracy_control", t)
        style = "yellow" if self.accuracy_record["used"] or self.accuracy_record.get("error") else "dim"
        self.console.print(f"    [{style}]{escape(self.accuracy_record['reason'])}[/{style}]")

    def fidelity(self, listed: dict[str, str], x: np.ndarray, y: np.ndarray) -> tuple[dict[str, dict], float]:
        """Run every listed artifact on the test split with its runtime; compare with the PyTorch source."""
        from pipeline.export.fidelity import compare
        from pipeline.runtimes import load

        t = self._step(f"fidelity: {len(listed)} artifacts × {len(y)} test images against PyTorch")
        with load(self.source) as torch_rt:
            reference = torch_rt.predict(x)
        source_acc = float((reference.argmax(1) == y).mean())
        rows: dict[str, dict] = {}
        for key in listed:
            try:
                with load(self.paths[key]) as rt:
                    row = compare(key, rt.predict(x), reference, y, fp32_rtol=self.fp32_rtol)
                    row.update(runtime=rt.name, runtime_info={k: v for k, v in rt.info.items() if isinstance(v, (str, int, float))})
            except Exception as exc:  # one artifact that will not run must not hide the others' numbers
                row = {"precision": None, "accuracy": None, "passed": False, "message": f"cannot run: {' '.join(str(exc).split())[:300]}"}
            row.update(file=listed[key], bytes=artifact_size(self.paths[key]))
            if FORMATS[key].family == "tflite" and FORMATS[key].precision == "int8":  # what the Edge TPU compiler demands
                row["op_check"] = self._op_check(key)
                if not row["op_check"]["passed"]:
                    row["passed"] = False
                    row["message"] = "; ".join(filter(None, [row["message"], "op check: not full-integer"]))
            rows[key] = row
            _print_row(self.console, key, row)
        self._done("fidelity", t)
        return rows, source_acc

    def teacher_onnx(self, checkpoint: Path, opset: int, x: np.ndarray, y: np.ndarray) -> dict:
        """The teacher as ONNX (the latency baseline), checked against its PyTorch self like any fp32 export."""
        from pipeline.export.fidelity import compare
        from pipeline.formats.sidecar import nchw_io, write_sidecar
        from pipeline.export.torch2onnx import torch2onnx
        from pipeline.runtimes import load

        t = self._step(f"teacher ONNX (opset {opset}), the latency baseline")
        with load(checkpoint) as torch_rt:
            model = torch_rt.model
            reference = torch_rt.predict(x)
            path = torch2onnx(model, self.input_shape, self.out / TEACHER_ONNX, opset=opset,
                              check_inputs=self.check_images, rtol=self.fp32_rtol)
        spec_in, spec_out = nchw_io(self.input_shape, self.num_classes)
        write_sidecar(path, format="onnx", input=spec_in, output=spec_out, preprocess=self.preprocess,
                      class_names=self.class_names, sources={"checkpoint": checkpoint}, extra={"model": "teacher"})
        with load(path) as rt:
            row = compare("onnx", rt.predict(x), reference, y, fp32_rtol=self.fp32_rtol)
        row.update(file=TEACHER_ONNX, bytes=artifact_size(path))
        self._done("teacher_onnx", t)
        _print_row(self.console, "teacher onnx", row)
        return row

    def _op_check(self, key: str) -> dict:
        """Full-integer verdict of the int8 TFLite from its own flatbuffer (what the Edge TPU compiler demands)."""
        from rich.markup import escape

        from pipeline.formats.tflite_graph import full_integer_problems, read_tflite

        graph = read_tflite(self.paths[key])
        problems = full_integer_problems(graph, self.rules.io_dtype)
        counts = graph.op_counts()
        if problems:
            self.console.print(f"  [bold red]✗ {key} op check: not full-integer {self.rules.io_dtype}: "
                               f"{escape('; '.join(problems[:3]))}[/bold red]")
        else:
            self.console.print(f"  [green]✓[/green] {key} op check: {sum(counts.values())} ops, all integer, {self.rules.io_dtype} I/O")
        return {"passed": not problems, "problems": problems, "op_counts": counts, "io_dtype": self.rules.io_dtype}


def _print_row(console, key: str, row: dict) -> None:
    from rich.markup import escape

    if row["accuracy"] is None:
        numbers = "no numbers"
    elif row["precision"] == "int8":
        numbers = f"accuracy {row['accuracy']:.2%} vs fp32 {row['reference_accuracy']:.2%}, agreement {row['agreement']:.2%}"
    else:
        numbers = f"agreement {row['agreement']:.2%}, max |Δlogit| {row['max_abs_logit_diff']:.1e}, accuracy {row['accuracy']:.2%}"
    if row["passed"]:
        console.print(f"  [green]✓[/green] {key}: {numbers}")
    else:
        console.print(f"  [bold red]✗ {key} FAILED fidelity: {escape(row['message'])} ({numbers})[/bold red]")
