"""PyTorch → full-integer int8 TFLite through litert-torch (PT2E quantisation), beside onnx2tf.

litert-torch (the renamed ai-edge-torch) lowers the PyTorch graph itself, no ONNX in between.
It cannot share our Python: every release wants numpy 2 and ai-edge-litert 2.3, where onnx2tf
1.29.24 pins numpy 1.26.4 and ai-edge-litert 2.1.0 (``docker/requirements-litert.txt`` says
what was tried). So it runs in a venv of its own, named by ``PIPELINE_LITERT_PYTHON``, on
``litert_worker.py``; what crosses over is a pipeline checkpoint, a calibration ``.npy`` and a
JSON job, never pickled code. The result is judged from its own flatbuffer like onnx2tf's.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pipeline.child import run_child
from pipeline.errors import PipelineError, one_line
from pipeline.formats.tflite_graph import full_integer_problems, read_tflite

PYTHON_ENV = "PIPELINE_LITERT_PYTHON"
WORKER = Path(__file__).with_name("litert_worker.py")
REQUIREMENTS = "docker/requirements-litert.txt"
HOW_TO = (f"python -m venv /opt/litert-venv && /opt/litert-venv/bin/pip install -r {REQUIREMENTS}, "
          f"then {PYTHON_ENV}=/opt/litert-venv/bin/python")


def litert_python(python: str | os.PathLike | None = None) -> Path:
    """The venv interpreter that has litert-torch: ``python`` if given, else ``$PIPELINE_LITERT_PYTHON``."""
    given = python or os.environ.get(PYTHON_ENV)
    if not given:
        raise PipelineError(f"export: litert-torch needs its own venv (it pins numpy 2 against onnx2tf's numpy 1.26.4) "
                            f"and {PYTHON_ENV} is not set: {HOW_TO}")
    path = Path(given)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise PipelineError(f"export: {PYTHON_ENV}={given} is no Python interpreter: {HOW_TO}")
    return path


def torch2litert(checkpoint: Path, out_path: Path, calibration: np.ndarray, *, per_channel: bool = True,
                 channels_last: bool = True, python: str | os.PathLike | None = None, strict: bool = True,
                 timeout: float = 1800) -> Path:
    """Convert the pipeline checkpoint at ``checkpoint`` into a static int8 ``out_path`` (.tflite).

    ``calibration``: float32 N×C×H×W, normalised (the data stage's subset). The model has int8
    input and output (PT2E's quantize at the input and dequantize at the output are folded into
    the I/O tensors), batch 1, NHWC layout unless ``channels_last`` is False. Checked afterwards
    with ``tflite_graph.full_integer_problems`` like onnx2tf's output: with ``strict`` a float op,
    DEQUANTIZE or non-int8 I/O raises, otherwise the caller judges the file itself.
    """
    exe = litert_python(python)
    checkpoint, out_path = Path(checkpoint).resolve(), Path(out_path).resolve()
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise PipelineError(f"export: calibration must be a non-empty N×C×H×W array, got shape {calibration.shape}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".litert-", dir=out_path.parent) as tmp:
        work = Path(tmp)
        np.save(work / "calibration.npy", np.ascontiguousarray(calibration))
        job = {"checkpoint": str(checkpoint), "calibration": str(work / "calibration.npy"),
               "output": str(work / "model.tflite"), "per_channel": per_channel, "channels_last": channels_last}
        (work / "job.json").write_text(json.dumps(job))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("PYTHONPATH", None)  # the main env's packages (numpy 1.26) must not shadow the venv's
        log = work / "litert.log"
        with open(log, "wb") as f:
            try:
                rc = run_child([str(exe), str(WORKER), str(work / "job.json")], cwd=work, env=env, stdout=f,
                               stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        made = work / "model.tflite"
        if rc != 0 or not made.is_file():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise PipelineError(f"export: litert-torch failed (exit {rc}): {one_line(lines[-1] if lines else 'no output')}")
        versions = work / "model.tflite.versions.json"
        os.replace(made, out_path)
        if versions.is_file():
            os.replace(versions, out_path.with_name(out_path.name + ".versions.json"))
    problems = full_integer_problems(read_tflite(out_path), "int8") if strict else []
    if problems:
        raise PipelineError(f"export: {out_path.name} (litert-torch) is not full-integer int8: {'; '.join(problems[:3])}")
    return out_path


def tool_versions(out_path: Path) -> dict:
    """The worker's litert_torch / torch / numpy versions recorded beside ``out_path`` ({} when absent)."""
    path = Path(out_path).with_name(Path(out_path).name + ".versions.json")
    return json.loads(path.read_text()) if path.is_file() else {}
