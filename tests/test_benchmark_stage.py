"""Benchmark and report stages on a real (tiny) run folder, with fake runtimes standing in for the exporters' files.

The folder holds the real data stage's output (digits), real checkpoints (resnet8) and an
``05_export/artifacts.json`` whose files are copies of the student checkpoint: the fake
runtime runs them with PyTorch, so every artifact must agree with the fp32 student exactly,
except ``tflite_int8``, which is made to disagree on a known third of the images.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pipeline.artifacts import Manifest, read_json
from pipeline.config import validate_config
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.run import StageContext

N_TEST = 45


class FakeRuntime:
    """Runs a checkpoint with torch; '.tflite' files shift the argmax on every third image (a lossy int8)."""

    name = "fake"

    def __init__(self, path, threads):
        if path.suffix == ".xml":
            raise RuntimeError("this IR does not compile")
        torch.set_num_threads(1)  # all cores of a busy shared CI box make torch slow and noisy; speed is not tested here
        self.model, _ = load_checkpoint(path)
        self.lossy = path.suffix == ".tflite"
        self.info = {"version": "0.0", "threads": threads}
        self.calls = 0

    def predict(self, x):
        self.calls += 1
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.asarray(x))).numpy()
        if self.lossy:
            rows = np.arange(len(x))
            logits[rows % 3 == 0] = np.roll(logits[rows % 3 == 0], 1, axis=1) * 0 + np.eye(logits.shape[1])[
                (logits[rows % 3 == 0].argmax(1) + 1) % logits.shape[1]]
        return logits

    def close(self):
        self.model = None


def _save(path, seed):
    torch.manual_seed(seed)
    model = build_model("resnet8", 10, 1, {})
    save_checkpoint(path, model, {"arch": "resnet8", "arch_args": {}, "num_classes": 10, "in_channels": 1})
    return model


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A finished run up to the target stage, without training anything."""
    root = tmp_path_factory.mktemp("bench")
    cfg = validate_config({
        "name": "tiny",
        "runs_dir": str(root / "runs"),
        "data": {"dataset": "digits", "max_train": 100, "max_test": N_TEST, "calibration_size": 16},
        "export": {"formats": ["onnx", "tflite_fp32", "tflite_int8", "openvino_fp32"]},
        "benchmark": {"threads": [1, 0], "warmup": 1, "min_runs": 3, "min_seconds": 0.0, "max_seconds": 0.2,
                      "gates": {"max_drop_vs_teacher": 100.0, "max_drop_vs_distilled_fp32": 1.0}},
    })
    run = cfg.run_dir
    dirs = {name: run / folder for name, folder in [("data", "01_data"), ("teacher", "02_teacher"), ("distill", "03_distill"),
                                                    ("qat", "04_qat"), ("export", "05_export"), ("target", "06_target")]}
    for d in dirs.values():
        d.mkdir(parents=True)
    from pipeline.data.stage import run as data_stage

    data_stage(StageContext(cfg=cfg, out=dirs["data"], inputs={}, cache=run / "cache"))
    _save(dirs["teacher"] / "teacher.pt", 1)
    student = _save(dirs["distill"] / "student.pt", 0)
    shutil.copyfile(dirs["distill"] / "student.pt", dirs["qat"] / "student.pt")
    from pipeline.data import load_split

    x, _ = load_split(dirs["data"], "test")
    with torch.no_grad():
        np.save(dirs["qat"] / "fakequant_test_logits.npy", student.eval()(torch.from_numpy(x)).numpy())
    Manifest(stage="qat", cache_key="k", inputs={}, metrics={"enabled": True}).write(dirs["qat"])
    (dirs["export"] / "openvino_fp32").mkdir()
    for name in ("student.onnx", "student_int8.tflite", "openvino_fp32/student.xml"):
        shutil.copyfile(dirs["distill"] / "student.pt", dirs["export"] / name)
    (dirs["export"] / "artifacts.json").write_text(json.dumps(
        {"onnx": "student.onnx", "tflite_int8": "student_int8.tflite", "openvino_fp32": "openvino_fp32/student.xml"}))
    Manifest(stage="export", cache_key="k", inputs={}, metrics={
        "source": "qat", "source_reason": "QAT weights: int8 on 10 validation images (export.source: auto)"}).write(dirs["export"])
    Manifest(stage="target", cache_key="k", inputs={}, metrics={
        "verdict": "unverified", "mapped": 12, "unmapped": 0, "compiler": "not compiled: edgetpu_compiler not found"}).write(dirs["target"])
    return cfg, dirs


@pytest.fixture(scope="module")
def benchmarked(run_folder):
    cfg, dirs = run_folder
    mp = pytest.MonkeyPatch()
    mp.setattr("pipeline.benchmark.stage.open_runtime", FakeRuntime)
    from pipeline.benchmark.stage import run as bench_stage

    out = cfg.run_dir / "07_benchmark"
    out.mkdir()
    metrics = bench_stage(StageContext(cfg=cfg, out=out, inputs=dict(dirs), cache=cfg.run_dir / "cache"))
    mp.undo()
    Manifest(stage="benchmark", cache_key="k", inputs={}, metrics=metrics.manifest_dict()).write(out)
    return cfg, {**dirs, "benchmark": out}, metrics, read_json(out / "benchmark.json")


def test_every_artifact_and_the_teacher_get_a_row_per_thread_setting(benchmarked):
    _, _, _, res = benchmarked
    keys = [(r["model"], r["artifact"], r["threads"]) for r in res["latency"]]
    expected = [(m, a, t) for m, a in [("teacher", "pytorch"), ("student", "pytorch"), ("student", "onnx"),
                                       ("student", "tflite_int8"), ("student", "openvino_fp32"), ("student", "tflite_fp32")]
                for t in (1, 0)]
    assert sorted(keys) == sorted(expected)
    ok = [r for r in res["latency"] if not r["error"]]
    assert len(ok) == 8  # teacher, student, onnx, tflite_int8 × 2 thread settings
    for r in ok:
        assert r["runs"] >= 3 and r["latency_ms"]["p50"] > 0 and r["init_ms"] > 0 and r["first_ms"] > 0
        assert r["size_bytes"] > 0 and r["params"] > 0 and r["macs"] > 0 and r["engine"] == "fake 0.0"
        assert r["where"] == "host" and r["images"] == N_TEST
        prec = r["latency_precision"]
        assert prec["stopped_by"] in ("precision", "max_seconds") and prec["target_pct"] == 3.0 and r["measured_s"] < 0.5
        assert prec["reached"] == (prec["half_width_pct"] is not None and prec["half_width_pct"] <= 3.0)
    failed = {r["artifact"]: r["error"] for r in res["latency"] if r["error"]}
    assert "does not compile" in failed["openvino_fp32"] and "not exported" in failed["tflite_fp32"]
    assert [r["deploy"] for r in res["latency"] if r["artifact"] == "tflite_int8"] == [True, True]


def test_settings_record_the_stopping_rule(benchmarked):
    _, _, _, res = benchmarked
    s = res["settings"]
    assert (s["min_runs"], s["min_seconds"], s["precision_pct"], s["max_seconds"], s["confidence"], s["timed"]) == (
        3, 0.0, 3.0, 0.2, 0.95, "all")


def test_deploy_artifact_is_scored_on_the_validation_split(benchmarked, run_folder):
    _, dirs = run_folder
    _, _, metrics, res = benchmarked
    from pipeline.data import load_split

    x, y = load_split(dirs["data"], "val")
    fake = FakeRuntime(dirs["export"] / "student_int8.tflite", 0)  # what the stage ran: the lossy fake int8
    expected = float(np.mean(fake.predict(x).argmax(1) == y))
    assert res["validation"] == {"split": "val", "artifact": "tflite_int8", "images": len(y), "top1": expected, "error": None}
    assert len(y) > 0 and metrics.deploy_val_top1 == expected and metrics.val_images == len(y)


@pytest.mark.parametrize("speedup_gate", [None, 1.0])
def test_timed_deploy_times_only_the_deploy_artifact_and_a_needed_teacher(run_folder, tmp_path, monkeypatch, speedup_gate):
    cfg, dirs = run_folder
    bench = cfg.benchmark.model_copy(update={"timed": "deploy", "threads": [0], "gates": cfg.benchmark.gates.model_copy(
        update={"min_speedup_vs_teacher": speedup_gate})})
    monkeypatch.setattr("pipeline.benchmark.stage.open_runtime", FakeRuntime)
    from pipeline.benchmark.stage import run as bench_stage

    metrics = bench_stage(StageContext(cfg=cfg.model_copy(update={"benchmark": bench}), out=tmp_path, inputs=dict(dirs),
                                       cache=tmp_path))
    res = read_json(tmp_path / "benchmark.json")
    timed = [(r["model"], r["artifact"], r["threads"]) for r in res["latency"]]
    expected = [("student", "tflite_int8", 0)] + ([("teacher", "pytorch", 0)] if speedup_gate else [])
    assert sorted(timed) == sorted(expected)
    assert len(res["accuracy"]) == 8 and res["settings"]["timed"] == "deploy"  # every stage still scored
    assert metrics.deploy_p50_ms > 0 and res["validation"]["top1"] is not None
    with np.load(tmp_path / "latency_samples.npz") as z:
        assert len(z.files) == len(expected)
    if speedup_gate:
        (gate,) = [g for g in res["gates"] if g["name"] == "min_speedup_vs_teacher"]
        assert gate["status"] == "NOT MEASURED" and "a host CPU latency says nothing about the Edge TPU" in gate["message"]


def test_accuracy_chain_shows_where_accuracy_is_lost(benchmarked):
    _, _, _, res = benchmarked
    acc = {r["stage"]: r for r in res["accuracy"]}
    assert list(acc) == ["teacher_fp32", "student_fp32", "student_fakequant", "student_qat_fp32", "onnx",
                         "tflite_fp32", "tflite_int8", "openvino_fp32"]
    assert acc["onnx"]["agreement"]["student_fp32"] == 1.0 and acc["student_fakequant"]["agreement"]["student_fp32"] == 1.0
    int8 = acc["tflite_int8"]
    assert int8["agreement"]["student_fp32"] == pytest.approx(1 - len(range(0, N_TEST, 3)) / N_TEST)
    assert int8["parent"] == "onnx"  # tflite_fp32 was not exported: compared with what it came from
    assert int8["drop_vs_parent_pts"] == pytest.approx(100 * (acc["onnx"]["top1"] - int8["top1"]), abs=1e-3)
    assert acc["tflite_fp32"]["top1"] is None and "not exported" in acc["tflite_fp32"]["error"]
    assert acc["openvino_fp32"]["top1"] is None and "does not compile" in acc["openvino_fp32"]["error"]
    assert all(r["images"] == N_TEST for r in res["accuracy"])


def test_gates_land_in_the_stage_metrics(benchmarked):
    _, _, metrics, res = benchmarked
    by = {g["name"]: g for g in metrics.gates}
    assert set(by) == {"max_drop_vs_teacher", "max_drop_vs_distilled_fp32"}
    assert by["max_drop_vs_teacher"]["passed"]
    s, d = res["accuracy"][1]["top1"], next(r["top1"] for r in res["accuracy"] if r["stage"] == "tflite_int8")
    assert by["max_drop_vs_distilled_fp32"]["value"] == pytest.approx(100 * (s - d), abs=1e-4)
    assert by["max_drop_vs_distilled_fp32"]["passed"] == (100 * (s - d) <= 1.0)
    assert res["run"]["gate_threads"] == 0  # the Edge TPU rules' threads=0 was measured
    assert metrics.gates_failed == sum(g["passed"] is False for g in metrics.gates)


def test_samples_and_environment_are_recorded(benchmarked):
    _, dirs, _, res = benchmarked
    with np.load(dirs["benchmark"] / "latency_samples.npz") as z:
        assert len(z.files) == 8 and all(len(z[k]) >= 3 for k in z.files)
    host = res["environment"]["host"]
    assert host["cpu"] and host["usable_cores"] >= 1 and "numpy" in host["tools"]
    assert res["target"]["verdict"] == "unverified" and res["target"]["name"] == "edge_tpu"


def test_report_stage_writes_valid_files_into_its_folder_and_the_run_folder(benchmarked):
    from pipeline.report.model import validate_report
    from pipeline.report.stage import run as report_stage

    cfg, dirs, _, _ = benchmarked
    out = cfg.run_dir / "08_report"
    out.mkdir()
    metrics = report_stage(StageContext(cfg=cfg, out=out, inputs=dirs, cache=cfg.run_dir / "cache"))
    assert metrics.files == ["report.json", "report.schema.json", "report.md", "report.html"]
    for name in metrics.files:
        assert (out / name).is_file() and (cfg.run_dir / name).read_bytes() == (out / name).read_bytes()
    report = read_json(cfg.run_dir / "report.json")
    validate_report(report)
    page = (cfg.run_dir / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 3


def test_a_missing_export_listing_is_a_one_line_error(run_folder, tmp_path):
    cfg, dirs = run_folder
    from pipeline.benchmark.stage import run as bench_stage

    empty = tmp_path / "05_export"
    empty.mkdir()
    with pytest.raises(PipelineError, match="artifacts.json: missing"):
        bench_stage(StageContext(cfg=cfg, out=tmp_path, inputs={**dirs, "export": empty}, cache=tmp_path))


def test_an_empty_or_unreadable_validation_split_is_said_not_scored(monkeypatch, tmp_path):
    from pipeline.benchmark.stage import validation_split, validation_top1

    monkeypatch.setattr("pipeline.data.load_split", lambda d, w: (np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64)))
    x, y, record = validation_split(tmp_path, "tflite_int8")
    assert record == {"split": "val", "artifact": "tflite_int8", "images": 0, "top1": None,
                      "error": "the validation split is empty (data.val_fraction is 0)"}
    assert validation_top1(None, x, y) == {}

    def unreadable(d, w):
        raise PipelineError("data: digits now has 3 images, the split recorded 1797; re-run the data stage (--from data)")

    monkeypatch.setattr("pipeline.data.load_split", unreadable)
    _, _, record = validation_split(tmp_path, "tflite_int8")
    assert record["top1"] is None and record["error"].startswith("the validation split could not be read: data: digits")
