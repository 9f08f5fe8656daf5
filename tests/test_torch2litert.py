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
    from pipeline.formats.tflite_graph import full_integer_problems, read_tflite
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



@pytest.mark.skipif(not Path(VENV_PYTHON).is_file(),
                    reason=f"no litert-torch venv ({PYTHON_ENV} unset and no /opt/litert-venv): see {REQUIREMENTS}")
def test_residual_adds_stay_integer(tmp_path):
    """mobile_half's chained residual ADDs: after a non-strict torch.export the quantizer annotated none of them and
    litert-torch left them in float (DEQUANTIZE → ADD → QUANTIZE); strict=True (the default) raises on that."""
    from pipeline.formats.tflite_graph import read_tflite
    from pipeline.models import build_model
    from pipeline.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "student.pt", build_model("mobile_half", 10, 1).eval(),
                    {"arch": "mobile_half", "arch_args": {}, "num_classes": 10, "in_channels": 1})
    calib = np.random.default_rng(0).standard_normal((16, 1, 16, 16)).astype(np.float32)
    path = torch2litert(tmp_path / "student.pt", tmp_path / "m.tflite", calib, python=VENV_PYTHON)
    counts = read_tflite(path).op_counts()
    assert counts["ADD"] == 10 and "DEQUANTIZE" not in counts

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



def _stage_config(root: Path, target: str, converter: str):
    from pipeline.config import validate_config

    return validate_config({
        "name": "t", "runs_dir": str(root), "target": {"name": target},
        "data": {"dataset": "digits", "max_train": 300, "max_test": 150, "calibration_size": 48},
        "export": {"formats": ["onnx", "tflite_fp32", "tflite_int8"], "tflite_converter": converter, "teacher_onnx": False},
    })


def _export_stage(tmp_path: Path, converter: str) -> tuple[Path, dict]:
    """The export stage of a trained resnet8 on digits, rpi4 rules (int8 I/O: the Edge TPU's uint8 I/O is not
    litert-torch's), with ``converter`` making tflite_int8."""
    import pipeline.data.stage as data_stage
    import pipeline.export.stage as export_stage
    from pipeline.data import load_split
    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.run import StageContext

    cfg = _stage_config(tmp_path, "rpi4", converter)
    data = tmp_path / "01_data"
    data.mkdir()
    data_stage.run(StageContext(cfg=cfg, out=data, inputs={}, cache=tmp_path / "cache"))
    x, y = (torch.from_numpy(a) for a in load_split(data, "train"))
    (tmp_path / "03_distill").mkdir()
    save_checkpoint(tmp_path / "03_distill" / "student.pt", trained_resnet8(x, y, batch=50).eval(),
                    {"arch": "resnet8", "arch_args": {}, "num_classes": 10, "in_channels": 1})
    out = tmp_path / "05_export"
    out.mkdir()
    metrics = export_stage.run(StageContext(cfg=cfg, out=out, inputs={"data": data, "distill": tmp_path / "03_distill"},
                                            cache=tmp_path / "cache")).manifest_dict()
    return out, metrics


needs_venv = pytest.mark.skipif(not Path(VENV_PYTHON).is_file(),
                                reason=f"no litert-torch venv ({PYTHON_ENV} unset and no /opt/litert-venv): see {REQUIREMENTS}")


@needs_venv
def test_export_stage_with_litert_torch(tmp_path, monkeypatch):
    """export.tflite_converter: litert_torch makes tflite_int8 (recorded in its sidecar), onnx2tf still tflite_fp32."""
    from pipeline.formats.sidecar import read_sidecar

    monkeypatch.setenv(PYTHON_ENV, VENV_PYTHON)
    out, metrics = _export_stage(tmp_path, "litert_torch")
    assert metrics["passed"], metrics["failed_artifacts"]
    side = read_sidecar(out / "student_int8.tflite", required=True)
    assert side["converter"] == "litert_torch" and side["converter_versions"]["litert_torch"] == "0.10.0"
    assert side["input"]["dtype"] == "int8" and side["quantization"]["calibration_images"] == 48
    assert list(side["sources"]) == ["checkpoint"]  # made from the weights, not from student.onnx
    assert (out / "student_fp32.tflite").is_file() and not list(out.glob(".litert*")) and not list(out.glob("*.versions.json"))


@needs_venv
def test_auto_keeps_the_converter_with_the_higher_validation_top1(tmp_path, monkeypatch):
    """export.tflite_converter: auto converts with both, scores both int8 models on the validation split, keeps the
    better at student_int8.tflite (litert-torch only when better beyond doubt, its paired interval above 0) and says so
    in the sidecar and the metrics."""
    from pipeline.formats.sidecar import read_sidecar

    monkeypatch.setenv(PYTHON_ENV, VENV_PYTHON)
    out, metrics = _export_stage(tmp_path, "auto")
    # chosen on 144 validation images; the test split (150) judges it afterwards, and may still fail it by an image
    assert metrics["fidelity"]["tflite_int8"]["op_check"]["passed"] and metrics["fidelity"]["tflite_fp32"]["passed"]
    record = metrics["tflite_converter"]
    acc = record["val_accuracy"]
    assert record["mode"] == "auto" and set(acc) == {"onnx2tf", "litert_torch"} and record["validation_images"] > 0
    got = record["decision"]
    assert record["chosen"] == ("litert_torch" if got["supported"] else "onnx2tf") and got["images"] == record["validation_images"]
    assert got["difference_pts"] == pytest.approx(100 * (acc["litert_torch"] - acc["onnx2tf"]), abs=1e-3)
    side = read_sidecar(out / "student_int8.tflite", required=True)
    assert side["converter"] == record["chosen"] and side["converter_choice"] == record
    assert ("layer_error" in metrics) == (record["chosen"] == "onnx2tf")  # per-layer error pairs onnx2tf's twins only
    assert not list(out.glob(".litert*")) and (out / "student_fp32.tflite").is_file()


def _inputs(tmp_path, io_dtype: str, converter: str, validation=None):
    """Export inputs and a state holding (stand-in) PyTorch weights, as the ONNX conversion leaves them."""
    import io

    from rich.console import Console

    from pipeline.export.common import ExportInputs, ExportSettings, ExportState

    x = np.zeros((4, 1, 8, 8), np.float32)
    settings = ExportSettings(validation=validation, tflite_converter=converter)
    inputs = ExportInputs(tmp_path, tmp_path / "student.onnx", "distill", (1, 8, 8), 10, {}, [], x, tmp_path / "c.npy",
                          True, io_dtype, Console(file=io.StringIO()), settings)
    state = ExportState(console=inputs.console, class_names=[], model=object())
    return inputs, state


def test_auto_without_the_venv_or_with_uint8_io_is_onnx2tf_and_says_why(tmp_path, monkeypatch):
    from pipeline.export.tflite_converter import choose_converter

    monkeypatch.delenv(PYTHON_ENV, raising=False)
    validation = (np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64))
    inputs, state = _inputs(tmp_path, "int8", "auto", validation)
    choice, artifact = choose_converter(inputs, state, tmp_path / "student_int8.tflite")
    assert choice.chosen == "onnx2tf" and artifact is None and PYTHON_ENV in choice.record["reason"]
    assert state.records["tflite_converter"] == choice.record
    assert choice.record["decision"]["images"] == 4 and choice.record["decision"]["ci95_pts"] is None
    inputs, state = _inputs(tmp_path, "uint8", "auto", validation)
    choice, _ = choose_converter(inputs, state, tmp_path / "student_int8.tflite")
    assert choice.chosen == "onnx2tf"
    assert choice.record["reason"] == "litert-torch not tried: litert_torch makes int8 I/O only, the target wants uint8"
    assert not list(tmp_path.iterdir())  # nothing converted


def test_litert_torch_refuses_the_edge_tpu_uint8_io(tmp_path):
    from pipeline.export.tflite_converter import ConverterChoice, convert_with_litert

    inputs, state = _inputs(tmp_path, "uint8", "litert_torch")
    with pytest.raises(PipelineError, match="int8 I/O only, the target wants uint8; use onnx2tf or auto"):
        convert_with_litert(inputs, state, "tflite_int8", ConverterChoice("litert_torch", "litert_torch"))


def test_cli_without_the_venv_is_one_error_line(tmp_path, monkeypatch, capsys):
    """`python -m pipeline export … export.tflite_converter=litert_torch` with no venv: exit 2, one line, no traceback."""
    from pipeline.__main__ import main
    from pipeline.models import build_model

    monkeypatch.delenv(PYTHON_ENV, raising=False)
    torch.save(build_model("resnet8", 10, 1).state_dict(), tmp_path / "w.pt")
    recipe = tmp_path / "rpi4.yaml"
    recipe.write_text(f"name: mine\nruns_dir: {tmp_path / 'runs'}\ntarget: {{name: rpi4}}\n"
                      "data: {dataset: digits, image_size: 8, max_train: 64, max_test: 40, calibration_size: 16}\n"
                      "export: {formats: [onnx, tflite_int8], tflite_converter: litert_torch}\n")
    assert main(["export", str(tmp_path / "w.pt"), "--arch", "resnet8", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and PYTHON_ENV in last and REQUIREMENTS in last, last
