"""`report RUN --baseline OTHER`: labelled runs, the config difference, one sign convention, Markdown + JSON, exit 3 on regression."""

from __future__ import annotations

import json

import pytest
from report_fakes import make_results, write_run

from pipeline.__main__ import main
from pipeline.report.compare import comparison, render_markdown

CONFIG = {"name": "edge_tpu", "runs_dir": "runs", "distill": {"method": "kd", "epochs": 20}, "qat": {"epochs": 3}}


@pytest.fixture
def runs(tmp_path):
    """Two folders both named edge_tpu (as two runs of one recipe are): the baseline, and a run of another config."""
    base = write_run(tmp_path / "a" / "edge_tpu", make_results(int8_errors=0, int8_p50=0.4), config=CONFIG)
    run = write_run(tmp_path / "b" / "edge_tpu", make_results(int8_errors=2, int8_p50=0.2),
                    config={**CONFIG, "name": "edge_tpu", "distill": {"method": "at", "epochs": 20}})
    return run, base


def test_comparison_labels_runs_shows_the_config_difference_and_signs_worse_as_positive(runs):
    run, base = runs
    comp = comparison(run, base)
    assert comp["run"]["label"] == f"edge_tpu ({run}, config {comp['run']['config_hash']})" and len(comp["run"]["config_hash"]) == 12
    assert comp["run"]["config_hash"] != comp["baseline"]["config_hash"]
    assert comp["config_diff"] == [{"key": "distill.method", "run": "at", "baseline": "kd"}]
    int8 = next(r for r in comp["accuracy"] if r["stage"] == "tflite_int8")
    assert int8["lost_pts"] == pytest.approx(2.0)  # 95 → 93: lost, positive, as the main report's "Lost vs … (pts)"
    lat = next(r for r in comp["latency"] if r["artifact"] == "tflite_int8" and r["threads"] == 1)
    assert lat["p50_slower_pct"] == pytest.approx(-50.0)  # twice as fast: negative
    text = render_markdown(comp)
    assert "| distill.method | at | kd |" in text
    assert "| TFLite int8 (LiteRT) | 93.00 | 95.00 | +2.00 |" in text
    assert "| student | tflite_int8 | host | 1 | 0.200 | 0.400 | -50.0% | 0.240 | 0.480 | -50.0% | 0.090 | 0.090 | +0.0% |" in text
    assert "| student | openvino_fp32 | host | 1 | failed | failed |" in text
    assert "## Deploy artifact (tflite_int8): REGRESSED" in text
    assert "- REGRESSED: tflite_int8 top-1 93.00% vs baseline 95.00%: lost 2.00 pts (limit 0.5)" in text


def test_fail_on_regression_exits_3_naming_what_regressed_and_writes_json(runs, capsys):
    run, base = runs
    assert main(["report", str(run), "--baseline", str(base), "--fail-on-regression"]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {run} regressed against the baseline {base}: tflite_int8 top-1 93.00% vs baseline 95.00%")
    comp = json.loads((run / "compare_edge_tpu.json").read_text())
    assert comp["kind"] == "comparison" and comp["regression"]["passed"] is False
    assert comp["regression"]["accuracy_lost_pts"] == pytest.approx(2.0)
    assert (run / "compare_edge_tpu.md").is_file() and (run / "report.json").is_file()  # written before the exit
    assert main(["report", str(run), "--baseline", str(base), "--fail-on-regression", "--max-accuracy-drop", "2"]) == 0


def test_a_slower_deploy_artifact_regresses_on_latency(tmp_path):
    base = write_run(tmp_path / "base", make_results(int8_p50=0.2), config=CONFIG)
    run = write_run(tmp_path / "run", make_results(int8_p50=0.23), config=CONFIG)
    comp = comparison(run, base)
    assert comp["config_diff"] == [] and comp["run"]["config_hash"] == comp["baseline"]["config_hash"]
    reg = comp["regression"]
    assert reg["latency_compared"] == "tflite_int8 on the host at threads=all" and reg["p50_slower_pct"] == pytest.approx(15.0)
    assert reg["regressed"] == ["tflite_int8 on the host at threads=all: p50 0.138 ms vs baseline 0.120 ms: +15.0% (limit 10%)"]
    assert main(["report", str(run), "--baseline", str(base), "--fail-on-regression"]) == 3
    assert main(["report", str(run), "--baseline", str(base), "--fail-on-regression", "--max-latency-increase", "20"]) == 0


def test_an_equal_run_exits_0(tmp_path, capsys):
    base = write_run(tmp_path / "base", config=CONFIG)
    run = write_run(tmp_path / "run", config=CONFIG)
    assert main(["report", str(run), "--baseline", str(base), "--fail-on-regression"]) == 0
    comp = json.loads((run / "compare_base.json").read_text())
    assert comp["regression"] == {**comp["regression"], "regressed": [], "passed": True, "accuracy_lost_pts": 0.0, "p50_slower_pct": 0.0}
    assert "## Deploy artifact (tflite_int8): no regression" in capsys.readouterr().out


def test_a_missing_baseline_fails_first_in_one_line_before_rewriting_anything(tmp_path, capsys):
    run = write_run(tmp_path / "run", config=CONFIG)
    assert main(["report", str(run), "--baseline", str(tmp_path / "nosuch"), "--fail-on-regression"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'nosuch'}: no such run folder"]
    assert not (run / "report.json").exists() and not (run / "report.html").exists()


def test_regression_limits_need_a_baseline(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert main(["report", str(run), "--fail-on-regression"]) == 2
    assert capsys.readouterr().err.strip() == "error: --fail-on-regression needs --baseline RUN_FOLDER (the run to compare against)"


def test_a_baseline_without_results_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    run = write_run(tmp_path / "run")
    assert main(["report", str(run), "--baseline", str(tmp_path / "empty")]) == 2
    assert "no report.json or 07_benchmark/benchmark.json" in capsys.readouterr().err
