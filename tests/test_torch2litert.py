"""litert-torch (PyTorch → int8 TFLite) in its own venv: the round trip when the venv exists, one error line when not."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import trained_resnet8
from pipeline.errors import PipelineError
from pipeline.export.torch2litert import PYTHON_ENV, REQUIREMENTS, torch2litert

VENV_PYTHON = os.environ.get(PYTHON_ENV) or "/opt/litert-venv/bin/python"


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = ((d.images[:, None].astype(np.float32) / 16.0) - 0.5) / 0.5  # 1×8×8, normalised as the data stage does
    return x, d.target.astype(np.int64)


@pytest.mark.skipif(not Path(VENV_PYTHON).is_file(),
                    reason=f"no litert-torch venv ({PYTHON_ENV} unset and no /opt/litert-venv): see {REQUIREMENTS}")
def test_round_trip_agrees_with_pytorch(tmp_path):
    from pipeline.export.tflite_graph import full_integer_problems, read_tflite
    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.runtimes.tflite_rt import TFLiteRuntime

    x, y = _digits()
    model = trained_resnet8(torch.from_numpy(x[:600]), torch.from_numpy(y[:600]), batch=50).eval()
    save_checkpoint(tmp_path / "student.pt", model, {"arch": "resnet8", "arch_args": {}, "num_classes": 10, "in_channels": 1})
    path = torch2litert(tmp_path / "student.pt", tmp_path / "student_litert_int8.tflite", x[:64], python=VENV_PYTHON)

    graph = read_tflite(path)
    assert full_integer_problems(graph, "int8") == []
    assert graph.inputs[0].shape == (1, 8, 8, 1)  # NHWC, like onnx2tf's
    test = x[1000:1300]
    with torch.no_grad():
        expected = model(torch.from_numpy(test)).argmax(1).numpy()
    with TFLiteRuntime(path, threads=1) as rt:
        got = rt.predict(test).argmax(1)
    assert (got == expected).mean() >= 0.95
    assert abs((got == y[1000:1300]).mean() - (expected == y[1000:1300]).mean()) <= 0.03


def test_missing_venv_is_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    with pytest.raises(PipelineError) as exc:
        torch2litert(tmp_path / "student.pt", tmp_path / "m.tflite", np.zeros((1, 1, 8, 8), np.float32))
    message = str(exc.value)
    assert "\n" not in message and PYTHON_ENV in message and REQUIREMENTS in message
    monkeypatch.setenv(PYTHON_ENV, str(tmp_path / "nope" / "python"))
    with pytest.raises(PipelineError, match="is no Python interpreter"):
        torch2litert(tmp_path / "student.pt", tmp_path / "m.tflite", np.zeros((1, 1, 8, 8), np.float32))


def test_worker_failure_is_one_line(tmp_path):
    """A failing worker (here: run by the main env's Python, which has no litert-torch) ends in one PipelineError line."""
    (tmp_path / "student.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError) as exc:
        torch2litert(tmp_path / "student.pt", tmp_path / "m.tflite", np.zeros((1, 1, 8, 8), np.float32), python=sys.executable)
    assert "litert-torch failed" in str(exc.value) and "\n" not in str(exc.value)
    assert not list(tmp_path.glob(".litert-*"))  # the work folder is gone

