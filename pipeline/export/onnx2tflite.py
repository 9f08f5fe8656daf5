"""ONNX → TFLite fp32 and full-integer int8, through onnx2tf, checked from the produced file.

onnx2tf (PINTO0309/onnx2tf) rewrites the NCHW ONNX graph as NHWC TensorFlow and calls the
TFLite converter with our calibration set as the representative dataset. It runs in a
subprocess: TensorFlow stays out of this process, its log is kept for the error message,
and its own ``sys.exit`` cannot end the pipeline. The child and everything it starts die with
the pipeline (``pipeline.child``), and its working folder is a hidden folder inside ``out_dir``
(the stage's ``.partial``), so even a SIGKILL leaves no process and no temp folder behind. Pitfalls handled (ENVIRONMENT.md): it
shells out to ``onnxsim`` (our interpreter's bin/ goes first on PATH); it downloads a
sample file for 3-channel inputs (a stand-in sits in its working folder); it can skip int8
and still exit 0 (the int8 file is read back and judged by ``tflite_graph``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.child import DIE_WITH_PARENT_SOURCE, run_child
from pipeline.errors import PipelineError, one_line
from pipeline.export.common import WEIGHT_SCHEMES
from pipeline.fs import DISK_FULL_WORDS
from pipeline.formats import primary
from pipeline.formats.tflite_graph import full_integer_problems, read_tflite
from pipeline.export.tflite_keep_float import CHILD_SOURCE, FloatRequest, read_answer, write_request

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"  # what onnx2tf downloads otherwise
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# onnx2tf's advice printed after every op failure: never the line worth showing
_GENERIC = ("trace log", "Read this", "Alternatively", "If the input OP", "Also, for models", "input_onnx_file_path", "onnx_op_name")

AS_IS_ENV = "PIPELINE_ONNX2TF_AS_IS"  # set to 1: run onnx2tf unchanged (every variant, onnxsim as processes), to compare

# Two things onnx2tf does that the pipeline does not need, undone in the child (nothing changes in the files kept:
# tests/test_export.py converts both ways and compares bytes):
# * it converts seven TFLite variants when asked for int8 (float32, float16, dynamic range, integer quant with float
#   I/O, full integer, and two with int16 activations), each a full TFLiteConverter run (the int8 ones calibrate
#   again); the pipeline keeps float32 and full integer. The other five are answered with an empty model without
#   converting. The converters are told apart by their settings, not their order; if TensorFlow's classes ever
#   differ, nothing is skipped;
# * it runs onnxsim 3-4 times as a new Python process each (``subprocess.check_output(["onnxsim", …])``); the child
#   runs the same command line (``onnxsim.main``) in its own process, importing onnxsim once.
_ONLY_WHAT_IS_KEPT = """
import os, subprocess
if os.environ.get("%s") != "1":
    try:
        import tensorflow as tf
        from tensorflow.lite.python import lite as _lite
        _want = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[sys.argv[2]]
        _int16 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        def _unused(conv):
            if not conv.optimizations:
                return False  # float32
            if conv.representative_dataset is None or _int16 in set(conv.target_spec.supported_ops or ()):
                return True  # float16, dynamic range, int16 activations
            return conv.inference_input_type != _want  # integer quant with float I/O, beside the full-integer one
        def _only_kept(cls):
            own = cls.__dict__["convert"]
            def convert(self, *args, **kwargs):
                if not args and not kwargs and _unused(self):
                    print("pipeline: onnx2tf variant not converted (unused)", flush=True)
                    return b""
                return own(self, *args, **kwargs)
            cls.convert = convert
        for _cls in (_lite.TFLiteConverterV2, _lite.TFLiteKerasModelConverterV2, _lite.TFLiteSavedModelConverterV2,
                     _lite.TFLiteFrozenGraphConverterV2):
            _only_kept(_cls)
    except Exception as exc:
        print(f"pipeline: converting every onnx2tf variant ({type(exc).__name__}: {exc})", flush=True)
    _check_output = subprocess.check_output
    def _onnxsim_here(cmd, *args, **kwargs):
        if not (isinstance(cmd, list) and cmd and cmd[0] == "onnxsim"):
            return _check_output(cmd, *args, **kwargs)
        import onnxsim
        argv, sys.argv = sys.argv, [str(c) for c in cmd]
        try:
            onnxsim.main()
        except SystemExit as exc:
            if exc.code:
                raise subprocess.CalledProcessError(exc.code, cmd) from None
        finally:
            sys.argv = argv
        print("pipeline: onnxsim run in this process", flush=True)
        return b""
    subprocess.check_output = _onnxsim_here
""" % AS_IS_ENV

# Runs in the child process: onnx2tf's Python API with arguments from a JSON file
# (mean/std must be numpy arrays, which its CLI builds from strings); argv[2] is the full-integer model's I/O dtype.
_DRIVER = DIE_WITH_PARENT_SOURCE + """
import json, sys
import numpy as np
""" + _ONLY_WHAT_IS_KEPT + CHILD_SOURCE + """
import onnx2tf
args = json.load(open(sys.argv[1]))
for item in args.get("custom_input_op_name_np_data_path") or []:
    item[2] = np.asarray(item[2], dtype=np.float32)
    item[3] = np.asarray(item[3], dtype=np.float32)
onnx2tf.convert(**args)
"""


def onnx2tflite(
    onnx_path: Path,
    out_dir: Path,
    calibration: np.ndarray,
    io_dtype: str = "int8",
    per_channel: bool = True,
    *,
    strict: bool = True,
    timeout: float = 1800,
    keep_float: FloatRequest | None = None,
) -> dict[str, Path]:
    """Convert ``onnx_path`` into ``out_dir/<stem>_fp32.tflite`` and ``<stem>_int8.tflite``.

    ``calibration``: float32 N×C×H×W, already normalised (so onnx2tf gets mean 0, std 1).
    The int8 model has NHWC ``io_dtype`` ("int8"/"uint8"; "float32" keeps float I/O around int8 ops) input and output; with ``strict``
    any deviation from full-integer (float op, DEQUANTIZE, Flex op, wrong I/O dtype) raises,
    otherwise the caller reads ``full_integer_problems`` itself and reports it. ``keep_float``: its patterns' layers
    stay float (``tflite_keep_float``); the request gets the child's answer."""
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    calibration = _checked_inputs(onnx_path, calibration, io_dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    channels = calibration.shape[1]

    with tempfile.TemporaryDirectory(prefix=".onnx2tf-", dir=out_dir) as tmp:
        work = Path(tmp).resolve()  # absolute: the converter runs in it (cwd), where a relative runs_dir means nothing
        source = work / onnx_path.name  # onnx2tf rewrites its input in place (onnxsim): convert a copy
        shutil.copyfile(onnx_path, source)
        np.save(work / "calibration_nhwc.npy", np.ascontiguousarray(calibration.transpose(0, 2, 3, 1)))
        np.save(work / SAMPLE_FILE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
        args = {
            "input_onnx_file_path": str(source),
            "output_folder_path": str(work / "out"),
            "output_integer_quantized_tflite": True,
            "quant_type": WEIGHT_SCHEMES[bool(per_channel)],
            "custom_input_op_name_np_data_path": [
                [_onnx_input_name(onnx_path), str(work / "calibration_nhwc.npy"), [[[[0.0] * channels]]], [[[[1.0] * channels]]]]
            ],
            "input_quant_dtype": io_dtype,
            "output_quant_dtype": io_dtype,
            "non_verbose": True,
        }
        (work / "args.json").write_text(json.dumps(args))
        request = [str(write_request(keep_float, work))] if keep_float is not None else []
        log = work / "onnx2tf.log"
        env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1", "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as f:
            try:
                proc = run_child([sys.executable, "-c", _DRIVER, str(work / "args.json"), io_dtype, *request], cwd=work, env=env,
                                 stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        text = log.read_text(errors="replace")
        full = next((w for w in DISK_FULL_WORDS if w in text), None)
        if rc != 0 and full:  # the stage reports a full disk in one line (pipeline.fs), not onnx2tf's log
            raise OSError(errno.ENOSPC, f"onnx2tf: {full}", str(out_dir))
        stem = onnx_path.stem
        fp32 = work / "out" / f"{stem}_float32.tflite"
        int8 = work / "out" / f"{stem}_full_integer_quant.tflite"
        if rc != 0 or not fp32.is_file():
            _show_tail(text)
            raise PipelineError(f"export: onnx2tf failed{_failed_op(text, onnx_path)}: {_last_line(text, rc)}")
        if not int8.is_file():
            _show_tail(text)
            raise PipelineError(f"export: onnx2tf wrote no full-integer model (int8 calibration skipped): {_last_line(text, rc)}")
        key32, key8 = primary(precision="fp32", family="tflite"), primary(precision="int8", family="tflite")
        paths = {key32: out_dir / f"{stem}_fp32.tflite", key8: out_dir / f"{stem}_int8.tflite"}
        shutil.copyfile(fp32, paths[key32])
        shutil.copyfile(int8, paths[key8])
        if keep_float is not None:
            read_answer(keep_float, Path(request[0]))

    if strict:
        problems = full_integer_problems(read_tflite(paths[key8]), io_dtype, float_layers=getattr(keep_float, "nodes", ()))
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise PipelineError(f"export: {paths[key8].name} is not full-integer {io_dtype}: {'; '.join(problems[:3])}{more}")
    return paths


def _checked_inputs(onnx_path: Path, calibration: np.ndarray, io_dtype: str) -> np.ndarray:
    """The calibration images as float32, once the arguments are known to make sense (one line each if not)."""
    if io_dtype not in ("int8", "uint8", "float32"):
        raise PipelineError(f"export: io_dtype must be int8, uint8 or float32 (int8 inside, float I/O), got {io_dtype!r}")
    if not onnx_path.is_file():
        raise PipelineError(f"export: {onnx_path}: no such ONNX file")
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise PipelineError(f"export: calibration must be a non-empty N×C×H×W array, got shape {calibration.shape}")
    return calibration


def _onnx_input_name(path: Path) -> str:
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise PipelineError(f"export: {path.name} is not a readable ONNX model ({type(exc).__name__}: {one_line(exc, 120)})") from None
    initialisers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initialisers]
    if len(names) != 1:
        raise PipelineError(f"export: {path.name} has {len(names)} inputs; onnx2tflite handles one image input")
    return names[0]


def _failed_op(log: str, onnx_path: Path) -> str:
    """' on Conv (/layer1/conv)' from onnx2tf's 'onnx_op_name:' error line, looked up in the ONNX graph."""
    log = _ANSI.sub("", log)
    missing = re.findall(r"(\w+) OP is not yet implemented", log)
    if missing:
        return f" on {missing[-1]}"
    names = re.findall(r"onnx_op_name:\s*(\S+)", log)
    if not names:
        return ""
    name = names[-1]
    try:
        import onnx

        nodes = {n.name: n.op_type for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}
        kind = nodes.get(name) or nodes.get(name.lstrip("/")) or nodes.get("/" + name.lstrip("/"))
    except Exception:
        kind = None
    return f" on {kind} ({name})" if kind else f" on {name}"


def _last_line(log: str, rc) -> str:
    """The most telling line of the log: the last exception message, else the last ERROR line, else the last line."""
    lines = [_ANSI.sub("", ln).strip() for ln in log.splitlines()]
    lines = [ln for ln in lines if ln and not re.match(r"^[WIE]\d{4} ", ln)]  # absl/TF C++ noise
    exc = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", ln)]
    err = [ln.removeprefix("ERROR:").strip() for ln in lines if ln.startswith("ERROR:") and not any(g in ln for g in _GENERIC)]
    pick = err[-1] if err else exc[-1] if exc else lines[-1] if lines else f"exit status {rc}, no output"
    return one_line(pick, 300) + ("" if rc in (0, None) else f" [exit {rc}]")


def _show_tail(log: str, lines: int = 15) -> None:
    """The end of onnx2tf's log on stderr, for the cases one line cannot explain."""
    kept = [_ANSI.sub("", ln).rstrip() for ln in log.splitlines() if ln.strip() and not re.match(r"^[WIE]\d{4} ", ln)]
    sys.stderr.write("onnx2tf log (last lines):\n" + "\n".join("  " + ln for ln in kept[-lines:]) + "\n")
