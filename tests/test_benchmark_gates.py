"""Gates: pass, fail with both numbers named, fail when unmeasurable, read device rows first; the run loop turns a failure into exit 3."""

from __future__ import annotations

import pytest

from pipeline.artifacts import Manifest
from pipeline.benchmark.gates import evaluate_gates, gate_threads
from pipeline.errors import GateFailure


def _acc(teacher=0.95, student=0.93, int8=0.92, qat=None):
    rows = [{"stage": "teacher_fp32", "top1": teacher}, {"stage": "student_fp32", "top1": student}]
    rows += [{"stage": "student_qat_fp32", "top1": qat}] if qat is not None else []
    return rows + [{"stage": "tflite_int8", "top1": int8}]


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
    from pipeline.config import Gates

    return {**Gates().model_dump(), **limits}


def test_all_gates_pass_and_values_are_computed_at_the_chosen_threads():
    res = evaluate_gates(_gates(max_drop_vs_teacher=5.0, max_drop_vs_distilled_fp32=1.5, max_conversion_drop=0.5,
                                max_p90_latency_ms=1.0, min_speedup_vs_teacher=2.0),
                         accuracy=_acc(qat=0.925), latency=LAT, deploy_artifact="tflite_int8", threads=0)
    by = {g["name"]: g for g in res}
    assert all(g["passed"] and g["status"] == "PASS" and g["where"] == "host" for g in res) and len(res) == 5
    assert by["max_drop_vs_teacher"]["value"] == pytest.approx(3.0)
    assert by["max_drop_vs_distilled_fp32"]["value"] == pytest.approx(1.0)  # QAT + conversion
    assert by["max_conversion_drop"]["value"] == pytest.approx(0.5)  # vs the QAT weights in fp32: conversion alone
    assert "fp32 of the same weights (student_qat_fp32) 92.50%" in by["max_conversion_drop"]["message"]
    assert by["max_p90_latency_ms"]["value"] == pytest.approx(0.6)  # threads=0 row, not the 1-thread one
    assert by["min_speedup_vs_teacher"]["value"] == pytest.approx(3.0)


def test_a_violated_gate_names_itself_and_both_numbers():
    res = evaluate_gates(_gates(max_drop_vs_teacher=2.0, min_speedup_vs_teacher=10.0, max_p90_latency_ms=0.2),
                         accuracy=_acc(), latency=LAT, deploy_artifact="tflite_int8", threads=1)
    by = {g["name"]: g for g in res}
    drop = by["max_drop_vs_teacher"]
    assert not drop["passed"] and drop["value"] == pytest.approx(3.0) and drop["limit"] == 2.0
    assert drop["message"].startswith("max_drop_vs_teacher FAIL: ") and "3.00" in drop["message"] and "limit 2" in drop["message"]
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
    assert all(g["value"] is None and "tflite_int8" in g["message"] and " FAIL: " in g["message"] for g in res)


def test_a_latency_gate_on_a_row_timed_deploy_did_not_time_is_not_measured_with_the_reason():
    only_deploy = [r for r in LAT if r["model"] == "student"]  # benchmark.timed: deploy, teacher not timed
    res = evaluate_gates(_gates(min_speedup_vs_teacher=2.0, max_p90_latency_ms=1.0, max_drop_vs_teacher=5.0), accuracy=_acc(),
                         latency=only_deploy, deploy_artifact="tflite_int8", threads=0, timed="deploy")
    by = {g["name"]: g for g in res}
    speed = by["min_speedup_vs_teacher"]
    assert speed["status"] == "NOT MEASURED" and speed["passed"] is None
    assert "teacher not timed at threads=all (benchmark.timed: deploy" in speed["message"]
    assert by["max_p90_latency_ms"]["status"] == "PASS" and by["max_drop_vs_teacher"]["status"] == "PASS"
    failed = [_lat("student", "tflite_int8", 0, None, None, error="boom")]  # timed and failed: still a failure
    res = evaluate_gates(_gates(max_p90_latency_ms=1.0), accuracy=_acc(), latency=failed, deploy_artifact="tflite_int8",
                         threads=0, timed="deploy")
    assert res[0]["status"] == "FAIL"
    res = evaluate_gates(_gates(min_speedup_vs_teacher=2.0), accuracy=_acc(), latency=only_deploy,
                         deploy_artifact="tflite_int8", threads=0)  # timed: all: a teacher row missing is a failure
    assert res[0]["status"] == "FAIL"


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
    failures = [g["message"] for g in gates if g["status"] == "FAIL"]
    report = Manifest(stage="report", cache_key="k", inputs={}, metrics={"verdict": "FAIL", "failures": failures})
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


def _dev(artifact, threads, p50, p90, *, device="coral", accuracy=0.91, host_accuracy=0.92, error=None, model="student"):
    row = _lat(model, artifact, threads, p50, p90, error)
    row.update(where="device", device=device, deploy=model == "student", threads_used=threads or 4,
               accuracy=None if error else accuracy, host_accuracy=host_accuracy, images=200)
    return row


def test_an_accelerator_target_without_a_device_result_has_latency_gates_not_measured():
    res = evaluate_gates(_gates(max_drop_vs_teacher=5.0, min_speedup_vs_teacher=2.0, max_p90_latency_ms=0.1),
                         accuracy=_acc(), latency=LAT, deploy_artifact="tflite_int8", threads=0, accelerator="Edge TPU")
    by = {g["name"]: g for g in res}
    assert by["max_drop_vs_teacher"]["status"] == "PASS"  # accuracy of the same int8 graph, on the host's test split
    for name in ("min_speedup_vs_teacher", "max_p90_latency_ms"):  # 0.6 ms would have FAILED a 0.1 ms limit on x86
        g = by[name]
        assert g["status"] == "NOT MEASURED" and g["passed"] is None and g["value"] is None
        assert "no Edge TPU result merged" in g["message"] and "host CPU, not the target" in g["message"]
    from pipeline.run import _raise_on_failed_gates

    bench = Manifest(stage="benchmark", cache_key="k", inputs={}, metrics={"gates": res})
    _raise_on_failed_gates({"benchmark": bench, "report": Manifest(stage="report", cache_key="k", inputs={})})  # no exit 3


def test_a_cpu_target_gates_on_host_latency_and_says_it_is_not_the_target():
    res = evaluate_gates(_gates(max_p90_latency_ms=1.0), accuracy=_acc(), latency=LAT, deploy_artifact="tflite_int8", threads=0)
    assert res[0]["status"] == "PASS" and res[0]["where"] == "host" and "on the host CPU, not the target" in res[0]["message"]


def test_device_rows_of_the_target_come_first():
    lat = [*LAT, _dev("tflite_int8", 1, 3.0, 3.5), _dev("tflite_int8", 0, 2.0, 2.4),
           _dev("tflite_int8", 0, 0.1, 0.1, device="other-board")]  # a board of another target: not read
    res = evaluate_gates(_gates(max_p90_latency_ms=2.0, max_drop_vs_teacher=3.5, min_speedup_vs_teacher=1.0), accuracy=_acc(),
                         latency=lat, deploy_artifact="tflite_int8", threads=0, target_devices=["coral"], target_threads=0)
    by = {g["name"]: g for g in res}
    p90 = by["max_p90_latency_ms"]
    assert p90["status"] == "FAIL" and p90["value"] == pytest.approx(2.4) and p90["where"] == "device" and p90["device"] == "coral"
    assert "on the device coral at threads=all" in p90["message"]
    drop = by["max_drop_vs_teacher"]  # 3.0 on the host + the board's 1.0 shortfall against the host on the same 200 images
    assert drop["value"] == pytest.approx(4.0) and drop["status"] == "FAIL" and "+1.00 pts on coral" in drop["message"]
    speed = by["min_speedup_vs_teacher"]  # no teacher ran on the board
    assert speed["status"] == "NOT MEASURED" and "no teacher row on the device coral" in speed["message"]


def test_a_failed_device_deploy_row_fails_every_gate():
    lat = [*LAT, _dev("tflite_int8", 0, 2.0, 2.4), _dev("tflite_edgetpu", 0, 0, 0, error="PipelineError: no Edge TPU found")]
    res = evaluate_gates(_gates(max_drop_vs_teacher=5.0, max_p90_latency_ms=10.0), accuracy=_acc(), latency=lat,
                         deploy_artifact="tflite_int8", threads=0, target_devices=["coral"], accelerator="Edge TPU")
    assert [g["status"] for g in res] == ["FAIL", "FAIL"]
    assert all("tflite_edgetpu FAILED on the device coral (threads=all): PipelineError: no Edge TPU found" in g["message"]
               for g in res)


def test_a_renamed_gate_is_a_one_line_config_error_naming_the_new_names(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import PipelineError

    recipe = tmp_path / "old.yaml"
    recipe.write_text("benchmark:\n  gates:\n    max_int8_drop_vs_fp32: 1.0\n")
    with pytest.raises(PipelineError) as info:
        load_config(recipe)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("old.yaml: benchmark.gates: max_int8_drop_vs_fp32 was renamed")
    assert "max_drop_vs_distilled_fp32" in msg and "max_conversion_drop" in msg


def test_every_config_gate_is_evaluated():
    from pipeline.config import Gates

    res = evaluate_gates({name: 1.0 for name in Gates.model_fields}, accuracy=_acc(), latency=LAT,
                         deploy_artifact="tflite_int8", threads=0)
    assert [g["name"] for g in res] == list(Gates.model_fields)
