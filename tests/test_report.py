"""Report files: exist, validate against the JSON Schema, HTML self-contained; device rows merge; runs compare."""

from __future__ import annotations

import base64
import json
import re

import jsonschema
import numpy as np
import pytest

from pipeline.benchmark.accuracy import accuracy_rows
from pipeline.benchmark.gates import evaluate_gates
from pipeline.benchmark.stage import RESULTS_KIND
from pipeline.report.build import build_report
from pipeline.report.compare import compare
from pipeline.report.schema import SCHEMA_VERSION, sample_key, validate_report
from pipeline.report.write import FILES, write_report

HOST = {"name": "ci", "cpu": "Test CPU", "cores": 2, "usable_cores": 2, "memory_mb": 1024, "arch": "x86_64",
        "os": "Linux", "kernel": "6", "runtimes": {"numpy": "1.26.4"}, "tools": {"pipeline": "0.1.0"}}
ARTIFACTS = {"pytorch": 300_000, "onnx": 310_000, "tflite_int8": 90_000, "openvino_fp32": 320_000}


def _row(model, artifact, threads, p50, error=None):
    row = {"where": "host", "device": "ci", "model": model, "artifact": artifact, "format": artifact, "file": f"{artifact}.bin",
           "engine": "fake 1", "threads": threads, "threads_used": threads or 2, "deploy": artifact == "tflite_int8",
           "size_bytes": ARTIFACTS[artifact] * (4 if model == "teacher" else 1), "params": 1000, "macs": 50_000, "error": error}
    if error is None:
        row.update({"init_ms": 5.0, "first_ms": 2 * p50, "warmup": 10, "runs": 50, "measured_s": 1.0, "rss_before_mb": 100.0,
                    "rss_delta_mb": 1.5, "memory_method": "peak (VmHWM)",
                    "latency_ms": {"mean": p50, "std": 0.01, "min": 0.9 * p50, "max": 2 * p50, "p50": p50, "p90": 1.2 * p50, "p99": 1.5 * p50}})
    return row


def make_results(int8_errors: int = 2, teacher_p50: float = 2.0, int8_p50: float = 0.2, gates=None) -> dict:
    """benchmark.json as the benchmark stage writes it, from known predictions (100 test images)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 100)
    wrong = lambda k: np.where(np.arange(100) < k, (y + 1) % 10, y)  # noqa: E731  first k images wrong
    preds = {"teacher_fp32": wrong(3), "student_fp32": wrong(5), "student_fakequant": wrong(5), "student_qat_fp32": wrong(5),
             "onnx": wrong(5), "tflite_int8": wrong(5 + int8_errors)}
    acc = accuracy_rows(preds, y, errors={"openvino_fp32": "RuntimeError: no"}, export_source="student_qat_fp32")
    top1 = {(r["model"], r["artifact"]): r["top1"] for r in acc if r["stage"] not in ("student_fakequant", "student_qat_fp32")}
    rows = []
    for threads in (1, 0):
        scale = 1.0 if threads == 1 else 0.6
        rows += [_row("teacher", "pytorch", threads, teacher_p50 * scale), _row("student", "pytorch", threads, 0.8 * scale),
                 _row("student", "onnx", threads, 0.3 * scale), _row("student", "tflite_int8", threads, int8_p50 * scale),
                 _row("student", "openvino_fp32", threads, 0, error="RuntimeError: no")]
    for r in rows:
        r["accuracy"], r["images"] = top1.get((r["model"], r["artifact"])), 100
    gates = gates or {"max_drop_vs_teacher": 5.0, "max_int8_drop_vs_fp32": 1.0, "max_p90_latency_ms": None, "min_speedup_vs_teacher": 2.0}
    return {
        "kind": RESULTS_KIND, "version": 1, "pipeline_version": "0.1.0",
        "run": {"name": "demo", "target": "edge_tpu", "deploy_artifact": "tflite_int8", "export_source": "qat", "gate_threads": 0},
        "data": {"dataset": "digits", "split": "test", "images": 100, "num_classes": 10, "input_shape": [1, 8, 8]},
        "environment": {"host": HOST},
        "settings": {"batch": 1, "warmup": 10, "min_runs": 50, "min_seconds": 1.0, "threads": [1, 0], "max_images": None,
                     "timer": "time.perf_counter", "method": "pipeline.benchmark.latency.measure_latency"},
        "models": {"teacher": {"arch": "resnet20", "params": 270_000, "macs": 40_000_000, "file": "teacher.pt", "size_bytes": 1_200_000},
                   "student": {"arch": "resnet8", "params": 78_000, "macs": 6_000_000, "file": "student.pt", "size_bytes": 320_000}},
        "accuracy": acc,
        "latency": rows,
        "gates": evaluate_gates(gates, accuracy=acc, latency=rows, deploy_artifact="tflite_int8", threads=0),
        "target": {"name": "edge_tpu", "verdict": "unverified", "mapped": 10, "unmapped": 0, "compiler": "not compiled: edgetpu_compiler not found"},
    }


def device_results(name="rpi4", p50=1.5, accuracy=0.9) -> dict:
    """A results file as ``python -m pipeline.device run`` writes it."""
    from pipeline.device.runner import RESULTS_KIND as DEVICE_KIND, RESULTS_VERSION

    row = {"model": "student", "artifact": "tflite_int8", "format": "tflite_int8", "file": "student_int8.tflite", "where": "device",
           "device": name, "threads": 4, "deploy": True, "error": None, "init_ms": 20.0, "first_ms": 3.0, "warmup": 10, "runs": 50,
           "measured_s": 1.0, "latency_ms": {"mean": p50, "std": 0.1, "min": p50 / 2, "max": 3 * p50, "p50": p50, "p90": 1.2 * p50,
                                              "p99": 2 * p50},
           "rss_before_mb": 30.0, "rss_delta_mb": 2.0, "memory_method": "sampled RSS", "accuracy": accuracy, "images": 200,
           "host_accuracy": 0.91, "host_reference": "tflite_int8", "agreement_with_host": 0.99}
    failed = {**{k: row[k] for k in ("model", "format", "file", "where", "device", "threads", "deploy")}, "artifact": "tflite_edgetpu",
              "error": "PipelineError: no Edge TPU found"}
    return {"kind": DEVICE_KIND, "version": RESULTS_VERSION, "created": "2025-01-01T00:00:00+0000", "pipeline_version": "0.1.0",
            "device": {"name": name, "cpu": "Raspberry Pi 4 Model B (4× Cortex-A72)", "cores": 4, "usable_cores": 4, "memory_mb": 3800,
                       "arch": "aarch64", "os": "Debian", "kernel": "6.1", "container": True, "runtimes": {"ai-edge-litert": "2.1.0"},
                       "coral_usb": []},
            "bundle": {"file": "b.tar", "sha256": "0" * 64, "run": "demo", "target": "edge_tpu"},
            "settings": {"threads": 4, "warmup": 10, "min_runs": 50, "min_seconds": 1.0}, "rows": [row, failed]}


@pytest.fixture
def results():
    return make_results()


def test_report_files_exist_and_json_validates_against_the_schema(tmp_path, results):
    report = build_report(results)
    samples = {sample_key(r): np.linspace(0.1, 0.3, 60).astype(np.float32) for r in results["latency"] if not r["error"]}
    written = write_report(report, tmp_path, ["json", "md", "html"], samples)
    assert [p.name for p in written] == list(FILES.values()) and all(p.stat().st_size > 0 for p in written)
    stored = json.loads((tmp_path / "report.json").read_text())
    validate_report(stored)
    assert stored["schema"] == "edge-pipeline/report" and stored["schema_version"] == SCHEMA_VERSION
    assert stored["environment"] == {"host": HOST, "devices": []}
    teacher, int8 = (next(r for r in stored["latency"] if r["artifact"] == a and r["threads"] == 1) for a in ("pytorch", "tflite_int8"))
    assert teacher["speedup_vs_teacher"] == 1.0 and int8["speedup_vs_teacher"] == pytest.approx(10.0)


def test_schema_rejects_what_a_consumer_could_not_read(results):
    report = build_report(results)
    broken = json.loads(json.dumps(report))
    del broken["latency"][0]["latency_ms"]  # a row that ran but has no numbers
    with pytest.raises(jsonschema.ValidationError):
        validate_report(broken)
    broken = json.loads(json.dumps(report))
    broken["gates"][0].pop("message")
    with pytest.raises(jsonschema.ValidationError):
        validate_report(broken)
    broken = json.loads(json.dumps(report))
    broken["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(jsonschema.ValidationError):
        validate_report(broken)


def test_html_is_self_contained(tmp_path, results):
    samples = {sample_key(r): np.full(10, 0.5, np.float32) for r in results["latency"] if not r["error"]}
    write_report(build_report(results), tmp_path, ["html"], samples)
    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3  # Pareto, stages, latency distributions
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "RuntimeError: no" in page and "edgetpu_compiler not found" in page


def test_markdown_has_the_formats_stage_and_gate_tables(tmp_path, results):
    write_report(build_report(results), tmp_path, ["md"])
    md = (tmp_path / "report.md").read_text()
    for heading in ("## Formats", "## Accuracy through the stages", "## Gates", "## Target", "## Environment", "## Method"):
        assert heading in md
    assert "| student | tflite_int8 (deploy) | ci | 1 | ✅ | 0.090 | 93.00 | 0.200 | 0.240 | 10.00× |" in md
    assert "| student | openvino_fp32 | ci | 1 | ❌ RuntimeError: no |" in md
    assert "| TFLite int8 (LiteRT) | 93.00 | onnx | +2.00 | +4.00 |" in md  # 2 pts lost in the int8 conversion


def test_a_failed_gate_is_in_the_report_with_both_numbers(tmp_path):
    results = make_results(int8_errors=3)  # int8 3 pts under the fp32 student (limit 1), 5 under the teacher (limit 5)
    report = build_report(results)
    write_report(report, tmp_path, ["json", "md"])
    failed = [g for g in json.loads((tmp_path / "report.json").read_text())["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == ["max_int8_drop_vs_fp32"]
    md = (tmp_path / "report.md").read_text()
    assert "1 of 3 gates FAILED" in md
    assert "max_int8_drop_vs_fp32 FAILED: tflite_int8 top-1 92.00% vs fp32 student 95.00%: drop 3.00 pts (limit 1 pts)" in md
    assert "max_drop_vs_teacher passed: tflite_int8 top-1 92.00% vs teacher 97.00%: drop 5.00 pts (limit 5 pts)" in md


def test_device_rows_merge_beside_the_host_rows(results):
    first, second = device_results(p50=2.0), device_results(p50=1.5)
    second["results_file"] = "rpi4.json"
    report = build_report(results, [first, second])
    validate_report(report)
    dev = [r for r in report["latency"] if r["where"] == "device"]
    assert len(dev) == 2  # the second file re-measured the same keys: replaced, not doubled
    int8 = next(r for r in dev if r["artifact"] == "tflite_int8")
    assert int8["device"] == "rpi4" and int8["latency_ms"]["p50"] == 1.5 and int8["agreement_with_host"] == 0.99
    assert int8["speedup_vs_teacher"] is None  # no teacher measured on the board
    assert [d["name"] for d in report["environment"]["devices"]] == ["rpi4"]
    assert report["environment"]["devices"][0]["results_file"] == "rpi4.json"
    assert len([r for r in report["latency"] if r["where"] == "host"]) == len(results["latency"])


def test_report_command_merges_device_files_and_compares_with_a_baseline(tmp_path, results, capsys):
    from pipeline.report.cli import report_command

    base, run = tmp_path / "base", tmp_path / "run"
    for folder, res in ((base, make_results(int8_errors=0, int8_p50=0.4)), (run, results)):
        (folder / "07_benchmark").mkdir(parents=True)
        (folder / "07_benchmark" / "benchmark.json").write_text(json.dumps(res))
    dev = tmp_path / "rpi4.json"
    dev.write_text(json.dumps(device_results()))
    assert report_command(run, baseline=base, device_results=[dev]) == 0
    assert (run / "device" / "rpi4.json").is_file()  # kept, so a later report run still merges it
    report = json.loads((run / "report.json").read_text())
    validate_report(report)
    assert {r["where"] for r in report["latency"]} == {"host", "device"}
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    text = (run / "compare_base.md").read_text()
    assert text in capsys.readouterr().out
    assert report_command(run) == 0  # again, no arguments: the kept device file is still merged
    assert any(r["where"] == "device" for r in json.loads((run / "report.json").read_text())["latency"])


def test_compare_lines_up_accuracy_latency_and_size(tmp_path):
    base, run = tmp_path / "base", tmp_path / "run"
    for folder, res in ((base, make_results(int8_errors=0, int8_p50=0.4)), (run, make_results(int8_errors=2, int8_p50=0.2))):
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps(build_report(res)))
    text = compare(run, base)
    assert "# run vs baseline base" in text  # both runs are named 'demo': folder names are used
    assert "| TFLite int8 (LiteRT) | 93.00 | 95.00 | -2.00 |" in text
    assert "| student | tflite_int8 | host | 1 | 0.200 | 0.400 | -50.0% | 0.240 | 0.480 | -50.0% | 0.090 | 0.090 | +0.0% |" in text
    assert "| student | openvino_fp32 | host | 1 | failed | failed |" in text
    assert "## Gates" in text


def test_compare_needs_a_report_or_benchmark_results(tmp_path):
    from pipeline.errors import PipelineError

    (tmp_path / "a").mkdir()
    with pytest.raises(PipelineError, match="no report.json"):
        compare(tmp_path / "a", tmp_path / "a")


def test_publish_removes_report_files_of_formats_no_longer_asked_for(tmp_path, results):
    from pipeline.report.stage import publish

    out, run = tmp_path / "08_report", tmp_path
    out.mkdir()
    (run / "report.html").write_text("stale")
    publish(write_report(build_report(results), out, ["json"]), run)
    assert (run / "report.json").is_file() and not (run / "report.html").exists()
