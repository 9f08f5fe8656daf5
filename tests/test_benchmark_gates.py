"""Gates: pass, fail with both numbers named, fail when unmeasurable; the run loop turns a failure into exit 3."""

from __future__ import annotations

import pytest

from pipeline.artifacts import Manifest
from pipeline.benchmark.gates import evaluate_gates, gate_threads
from pipeline.errors import GateFailure


def _acc(teacher=0.95, student=0.93, int8=0.92):
    return [
        {"stage": "teacher_fp32", "top1": teacher},
        {"stage": "student_fp32", "top1": student},
        {"stage": "tflite_int8", "top1": int8},
    ]


def _lat(model, artifact, threads, p50, p90, error=None):
    return {"where": "host", "device": "h", "model": model, "artifact": artifact, "threads": threads, "error": error,
            "latency_ms": None if error else {"p50": p50, "p90": p90}}


LAT = [
    _lat("teacher", "pytorch", 1, 2.0, 2.5),
    _lat("student", "tflite_int8", 1, 0.25, 0.30),
    _lat("teacher", "pytorch", 0, 1.2, 1.5),
    _lat("student", "tflite_int8", 0, 0.4, 0.6),
]


def _gates(**limits):
    return {"max_drop_vs_teacher": None, "max_int8_drop_vs_fp32": None, "max_p90_latency_ms": None,
            "min_speedup_vs_teacher": None, **limits}


def test_all_gates_pass_and_values_are_computed_at_the_chosen_threads():
    res = evaluate_gates(_gates(max_drop_vs_teacher=5.0, max_int8_drop_vs_fp32=1.5, max_p90_latency_ms=1.0,
                                min_speedup_vs_teacher=2.0),
                         accuracy=_acc(), latency=LAT, deploy_artifact="tflite_int8", threads=0)
    by = {g["name"]: g for g in res}
    assert all(g["passed"] for g in res) and len(res) == 4
    assert by["max_drop_vs_teacher"]["value"] == pytest.approx(3.0)
    assert by["max_int8_drop_vs_fp32"]["value"] == pytest.approx(1.0)
    assert by["max_p90_latency_ms"]["value"] == pytest.approx(0.6)  # threads=0 row, not the 1-thread one
    assert by["min_speedup_vs_teacher"]["value"] == pytest.approx(3.0)


def test_a_violated_gate_names_itself_and_both_numbers():
    res = evaluate_gates(_gates(max_drop_vs_teacher=2.0, min_speedup_vs_teacher=10.0, max_p90_latency_ms=0.2),
                         accuracy=_acc(), latency=LAT, deploy_artifact="tflite_int8", threads=1)
    by = {g["name"]: g for g in res}
    drop = by["max_drop_vs_teacher"]
    assert not drop["passed"] and drop["value"] == pytest.approx(3.0) and drop["limit"] == 2.0
    assert "max_drop_vs_teacher" in drop["message"] and "3.00" in drop["message"] and "limit 2" in drop["message"]
    assert "92.00%" in drop["message"] and "95.00%" in drop["message"]
    speed = by["min_speedup_vs_teacher"]
    assert not speed["passed"] and speed["value"] == pytest.approx(8.0) and "8.00" in speed["message"] and "10" in speed["message"]
    p90 = by["max_p90_latency_ms"]
    assert not p90["passed"] and "0.300" in p90["message"] and "0.2" in p90["message"]


def test_unset_gates_are_skipped_and_boundaries_pass():
    res = evaluate_gates(_gates(max_drop_vs_teacher=3.0), accuracy=_acc(), latency=LAT, deploy_artifact="tflite_int8", threads=1)
    assert [g["name"] for g in res] == ["max_drop_vs_teacher"] and res[0]["passed"]  # drop == limit passes


def test_a_gate_on_a_failed_artifact_fails_and_says_why():
    lat = [_lat("teacher", "pytorch", 1, 2.0, 2.5), _lat("student", "tflite_int8", 1, 0, 0, error="RuntimeError: boom")]
    acc = [r for r in _acc() if r["stage"] != "tflite_int8"]
    res = evaluate_gates(_gates(max_drop_vs_teacher=5.0, max_p90_latency_ms=1.0), accuracy=acc, latency=lat,
                         deploy_artifact="tflite_int8", threads=1)
    assert [g["passed"] for g in res] == [False, False]
    assert all(g["value"] is None and "tflite_int8" in g["message"] and "FAILED" in g["message"] for g in res)


def test_gate_threads_prefers_the_targets_setting_else_the_most_cores():
    assert gate_threads([1, 0], 0) == 0
    assert gate_threads([1, 0], 1) == 1
    assert gate_threads([1, 2], 64) == 2
    assert gate_threads([1, 0], 64) == 0  # not measured: the setting with the most cores
    assert gate_threads([], 0) is None


def test_run_loop_exits_3_after_the_report_when_a_gate_failed():
    from pipeline.run import _raise_on_failed_gates

    gates = evaluate_gates(_gates(max_drop_vs_teacher=1.0), accuracy=_acc(), latency=LAT, deploy_artifact="tflite_int8", threads=1)
    bench = Manifest(stage="benchmark", cache_key="k", inputs={}, metrics={"gates": gates})
    report = Manifest(stage="report", cache_key="k", inputs={})
    _raise_on_failed_gates({"benchmark": bench})  # report not written yet: the loop does not stop here
    with pytest.raises(GateFailure) as info:
        _raise_on_failed_gates({"benchmark": bench, "report": report})
    assert info.value.exit_code == 3 and "max_drop_vs_teacher" in str(info.value)


def test_speedup_divides_by_the_teachers_onnx_row_when_there_is_one():
    lat = [*LAT, _lat("teacher", "onnx", 0, 0.8, 1.0)]
    res = evaluate_gates(_gates(min_speedup_vs_teacher=2.5), accuracy=_acc(), latency=lat, deploy_artifact="tflite_int8", threads=0)
    assert res[0]["value"] == pytest.approx(2.0) and not res[0]["passed"]  # 0.8 / 0.4, not PyTorch's 1.2 / 0.4
    assert "teacher (onnx)" in res[0]["message"]


def test_report_speedups_use_the_same_teacher_baseline():
    from pipeline.report.build import add_speedups

    rows = [{**r, "where": "host", "device": "h"} for r in [*LAT, _lat("teacher", "onnx", 0, 0.8, 1.0)]]
    by = {(r["model"], r["artifact"], r["threads"]): r["speedup_vs_teacher"] for r in add_speedups(rows)}
    assert by["student", "tflite_int8", 0] == pytest.approx(2.0)
    assert by["teacher", "pytorch", 0] == pytest.approx(0.8 / 1.2, rel=1e-3)
    assert by["student", "tflite_int8", 1] == pytest.approx(8.0)  # no ONNX teacher at 1 thread: PyTorch's
