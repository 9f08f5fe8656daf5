"""Recorded stage outputs of a fake run (benchmark.json, the export and target manifests, a device results file).

Numbers come from known predictions, so every accuracy, drop and interval in a report built from
them is known by hand; the report tests build from these in milliseconds instead of running a pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.benchmark.accuracy import accuracy_rows
from pipeline.benchmark.gates import evaluate_gates
from pipeline.benchmark.stage import RESULTS_KIND
from pipeline.target.edge_tpu_compiler import NOT_FOUND

HOST = {"name": "ci", "cpu": "Test CPU", "cores": 2, "usable_cores": 2, "memory_mb": 1024, "arch": "x86_64",
        "os": "Linux", "kernel": "6", "runtimes": {"numpy": "1.26.4"}, "tools": {"pipeline": "0.1.0"}}
ARTIFACTS = {"pytorch": 300_000, "onnx": 310_000, "tflite_int8": 90_000, "openvino_fp32": 320_000}
GATES = {"max_drop_vs_teacher": 5.0, "max_conversion_drop": 2.0, "max_p90_latency_ms": None, "min_speedup_vs_teacher": 2.0}
FIDELITY_MISS = "accuracy 91.64% is 98.50% of fp32 93.04% (< 99%)"


def _row(model, artifact, threads, p50, error=None):
    row = {"where": "host", "device": "ci", "model": model, "artifact": artifact, "format": artifact, "file": f"{artifact}.bin",
           "engine": "fake 1", "threads": threads, "threads_used": threads or 2, "deploy": artifact == "tflite_int8",
           "size_bytes": ARTIFACTS[artifact] * (4 if model == "teacher" else 1), "params": 1000, "macs": 50_000, "error": error}
    if error is None:
        row.update({"init_ms": 5.0, "first_ms": 2 * p50, "warmup": 10, "runs": 50, "measured_s": 1.0, "rss_before_mb": 100.0,
                    "rss_delta_mb": 1.5, "memory_method": "peak (VmHWM)",
                    "latency_ms": {"mean": p50, "std": 0.01, "min": 0.9 * p50, "max": 2 * p50, "p50": p50, "p90": 1.2 * p50, "p99": 1.5 * p50},
                    "latency_precision": precision(p50, capped=model == "teacher" and threads == 0)})
    return row


def precision(p50: float, capped: bool = False) -> dict:
    """A row's latency_precision: ±2 % on p50 and p90 (±4 % on p90 where the time cap stopped it first)."""
    p90, w90 = 1.2 * p50, 0.04 if capped else 0.02
    return {"confidence": 0.95, "target_pct": 3.0, "p50_low": 0.98 * p50, "p50_high": 1.02 * p50, "p50_half_width_pct": 2.0,
            "p90_low": (1 - w90) * p90, "p90_high": (1 + w90) * p90, "p90_half_width_pct": 100 * w90,
            "half_width_pct": 100 * w90, "reached": not capped, "stopped_by": "max_seconds" if capped else "precision"}


def target_metrics() -> dict:
    """06_target's metrics for the Edge TPU where no edgetpu_compiler is installed (the default here)."""
    return {"verdict": "fully mapped", "summary": "fully mapped: 10/10 ops on the Edge TPU, 0.07 MiB of parameters (fits)",
            "ops_total": 10, "ops_mapped": 10, "ops_cpu": 0, "fits_on_chip": True, "passed": True, "artifact": "tflite_int8",
            "file": "student_int8.tflite", "compiler": NOT_FOUND, "compiled": False, "device": "CPU", "device_available": True,
            "check": {"checker": "edgetpu_static", "source": "coral.ai", "operators": [{"op": "CONV_2D", "count": 7}]}}


def export_metrics(failing: dict[str, str] | None = None) -> dict:
    """05_export's metrics; ``failing``: artifact -> the fidelity message it fails with."""
    failing = failing or {}

    def row(key, precision):
        r = {"precision": precision, "accuracy": 0.93, "reference_accuracy": 0.95, "agreement": 0.97, "max_abs_logit_diff": 0.2,
             "images": 100, "passed": key not in failing, "message": failing.get(key, ""), "file": f"{key}.bin", "bytes": 1000}
        if key == "tflite_int8":
            r["op_check"] = {"passed": True, "problems": [], "op_counts": {"CONV_2D": 7, "FULLY_CONNECTED": 1}, "io_dtype": "uint8"}
        return r

    fidelity = {"onnx": row("onnx", "fp32"), "tflite_int8": row("tflite_int8", "int8"), "openvino_int8": row("openvino_int8", "int8")}
    return {"source_accuracy": 0.95, "artifacts": 3, "failed": len(failing), "passed": not failing, "failed_artifacts": list(failing),
            "source": "qat", "source_reason": "QAT weights: QAT kept 95.00% validation top-1 against the distilled 95.50% (guard: 1 pt)",
            "fidelity": fidelity}


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
    return {
        "kind": RESULTS_KIND, "version": 1, "pipeline_version": "0.1.0",
        "run": {"name": "demo", "target": "edge_tpu", "deploy_artifact": "tflite_int8", "export_source": "qat", "gate_threads": 0},
        "data": {"dataset": "digits", "split": "test", "images": 100, "num_classes": 10, "input_shape": [1, 8, 8]},
        "environment": {"host": HOST},
        "settings": {"batch": 1, "warmup": 10, "min_runs": 25, "min_seconds": 0.0, "precision_pct": 3.0, "max_seconds": 1.0,
                     "confidence": 0.95, "timed": "all", "threads": [1, 0], "max_images": None,
                     "timer": "time.perf_counter", "method": "pipeline.benchmark.latency.measure_latency"},
        "models": {"teacher": {"arch": "resnet20", "params": 270_000, "macs": 40_000_000, "file": "teacher.pt", "size_bytes": 1_200_000},
                   "student": {"arch": "resnet8", "params": 78_000, "macs": 6_000_000, "file": "student.pt", "size_bytes": 320_000}},
        "accuracy": acc,
        "validation": {"split": "val", "artifact": "tflite_int8", "images": 40, "top1": 0.925, "error": None},
        "latency": rows,
        "gates": evaluate_gates(gates or GATES, accuracy=acc, latency=rows, deploy_artifact="tflite_int8", threads=0,
                                accelerator="Edge TPU"),
        "target": {**target_metrics(), "name": "edge_tpu"},
    }


def device_results(name="coral", edgetpu: str = "failed", p50=1.5, accuracy=0.9, target="edge_tpu") -> dict:
    """A results file as ``python -m pipeline.device run`` writes it for an Edge TPU bundle with the compiled model.

    ``edgetpu``: "failed" (the delegate found no Edge TPU: the deploy row fails), "ok" (it ran on the Edge TPU)."""
    from pipeline.report.schema import DEVICE_RESULTS_KIND as DEVICE_KIND, DEVICE_RESULTS_VERSION as RESULTS_VERSION

    def timed(row, p50):
        row.update({"init_ms": 20.0, "first_ms": 3.0, "warmup": 10, "runs": 50, "measured_s": 1.0, "threads_used": 4,
                    "latency_ms": {"mean": p50, "std": 0.1, "min": p50 / 2, "max": 3 * p50, "p50": p50, "p90": 1.2 * p50, "p99": 2 * p50},
                    "rss_before_mb": 30.0, "rss_delta_mb": 2.0, "memory_method": "sampled RSS", "engine": "tflite 2.1.0"})
        return row

    base = {"model": "student", "where": "device", "device": name, "threads": 4, "images": 200, "host_accuracy": 0.91,
            "host_reference": "tflite_int8", "error": None}
    cpu = timed({**base, "artifact": "tflite_int8", "format": "tflite_int8", "file": "student_int8.tflite", "deploy": False,
                 "size_bytes": 90_000, "accuracy": accuracy, "agreement_with_host": 0.99}, p50)
    tpu = {**base, "artifact": "tflite_edgetpu", "format": "tflite_edgetpu", "file": "student_int8_edgetpu.tflite", "deploy": True,
           "size_bytes": 120_000, "accuracy": None,
           "delegate": {"library": "libedgetpu.so.1", "device": "auto", "installed": [], "explicit_library": False,
                        "loaded": edgetpu == "ok"}}
    if edgetpu == "ok":
        tpu = timed({**tpu, "accuracy": accuracy, "agreement_with_host": 0.995, "engine": "tflite 2.1.0 + libedgetpu.so.1"}, p50 / 5)
    else:
        tpu["error"] = "PipelineError: Edge TPU delegate libedgetpu.so.1: failed to load; no Edge TPU visible"
    return {"kind": DEVICE_KIND, "version": RESULTS_VERSION, "created": "2025-01-01T00:00:00+0000", "pipeline_version": "0.1.0",
            "device": {"name": name, "cpu": "Raspberry Pi 4 Model B (4× Cortex-A72)", "cores": 4, "usable_cores": 4, "memory_mb": 3800,
                       "arch": "aarch64", "os": "Debian", "kernel": "6.1", "container": True, "runtimes": {"ai-edge-litert": "2.1.0"},
                       "coral_usb": ["1a6e:089a"]},
            "bundle": {"file": "b.tar", "sha256": "0" * 64, "run": "demo", "target": target},
            "settings": {"threads": [4], "warmup": 10, "min_runs": 50, "min_seconds": 1.0}, "rows": [tpu, cpu]}


def write_run(folder: Path, results: dict | None = None, *, config: dict | None = None, export: dict | None = None,
              target: dict | None = None) -> Path:
    """A run folder as the pipeline leaves it: 07_benchmark/benchmark.json, the export and target manifests, config.json."""
    from pipeline.artifacts import Manifest

    folder = Path(folder)
    (folder / "07_benchmark").mkdir(parents=True)
    (folder / "07_benchmark" / "benchmark.json").write_text(json.dumps(results or make_results()))
    for stage, metrics in (("export", export or export_metrics()), ("target", target or target_metrics())):
        out = folder / f"0{5 if stage == 'export' else 6}_{stage}"
        out.mkdir()
        Manifest(stage=stage, cache_key="k", inputs={}, metrics=metrics).write(out)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder
