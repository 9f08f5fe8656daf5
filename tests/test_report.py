"""Report files: say first what was (not) measured, show every check, validate against the schema they carry; device rows merge."""

from __future__ import annotations

import base64
import html
import json
import re

import jsonschema
import numpy as np
import pytest
from report_fakes import FIDELITY_MISS, HOST, device_results, export_metrics, make_results, target_metrics, write_run

from pipeline.report.build import RunRecords, build_report
from pipeline.report.model import json_schema, validate_report
from pipeline.report.markdown import escape
from pipeline.benchmark.rows import sample_key
from pipeline.report.schema import SCHEMA_FILE, SCHEMA_VERSION
from pipeline.report.stats import wilson_interval
from pipeline.report.write import FILES, write_report


@pytest.fixture
def results():
    return make_results()


def records(**kw) -> RunRecords:
    return RunRecords(**{"folder": "runs/demo", "export": export_metrics(), "target": target_metrics(), **kw})


def first_lines(path, n=8) -> str:
    """The top of a report as a reader sees it: Markdown lines, or HTML up to the second table."""
    text = path.read_text()
    if path.suffix == ".md":
        return "\n".join(text.splitlines()[:n])
    body = text.split("<body>", 1)[1]
    top = re.sub(r"</?(span|b)\b[^>]*>", "", "<table>".join(body.split("<table>")[:2]))  # inline tags: no break
    return html.unescape(re.sub(r"<[^>]+>", "\n", top))


def test_report_files_exist_and_json_validates_against_the_schema_beside_it(tmp_path, results):
    report = build_report(results, records=records())
    samples = {sample_key(r): np.linspace(0.1, 0.3, 60).astype(np.float32) for r in results["latency"] if not r["error"]}
    written = write_report(report, tmp_path, ["json", "md", "html"], samples)
    assert [p.name for p in written] == ["report.json", SCHEMA_FILE, "report.md", "report.html"]
    assert all(p.stat().st_size > 0 for p in written)
    stored = json.loads((tmp_path / "report.json").read_text())
    assert stored["$schema"] == SCHEMA_FILE  # the schema travels with the report, named by it
    jsonschema.validate(stored, json.loads((tmp_path / SCHEMA_FILE).read_text()), cls=jsonschema.Draft202012Validator)
    assert stored["schema"] == "edge-pipeline/report" and stored["schema_version"] == SCHEMA_VERSION == 2
    assert stored["environment"]["host"]["name"] == HOST["name"] and stored["environment"]["devices"] == []
    teacher, int8 = (next(r for r in stored["latency"] if r["artifact"] == a and r["threads"] == 1) for a in ("pytorch", "tflite_int8"))
    assert teacher["speedup_vs_teacher"] == 1.0 and int8["speedup_vs_teacher"] == pytest.approx(10.0)


def test_latency_intervals_and_the_validation_top1_reach_every_format(tmp_path, results):
    report = build_report(results, records=records())
    write_report(report, tmp_path, ["json", "md", "html"], {})
    stored = json.loads((tmp_path / "report.json").read_text())
    int8 = next(r for r in stored["latency"] if r["artifact"] == "tflite_int8" and r["threads"] == 0)
    assert int8["latency_precision"]["p50_half_width_pct"] == 2.0 and int8["latency_precision"]["stopped_by"] == "precision"
    assert stored["settings"]["precision_pct"] == 3.0 and stored["settings"]["timed"] == "all"
    assert stored["validation"] == {"split": "val", "artifact": "tflite_int8", "images": 40, "top1": 0.925, "error": None}
    assert stored["headline"]["val_top1"] == 0.925 and stored["headline"]["val_images"] == 40
    assert stored["headline"]["p50_half_width_pct"] == 2.0
    md = (tmp_path / "report.md").read_text()
    assert "0.120 ±2.0 %" in md and "0.144 ±2.0 %" in md  # int8 at all cores: p50 and p90 with their half-widths
    assert "1.440 ±4.0 %\\*" in md and "1.200 ±2.0 % |" in md  # the cap stopped the teacher at all cores: p90 short of ±3 %
    assert "92.50 % on 40 validation images" in md and "0.120 ms ±2.0 % on the host CPU" in md
    assert "92.50 % on 40 validation images" in (tmp_path / "report.html").read_text()


def test_results_from_before_the_precision_rule_still_build(results):
    for r in results["latency"]:
        r.pop("latency_precision", None)
    results.pop("validation")
    results["settings"] = {k: v for k, v in results["settings"].items() if k not in ("precision_pct", "max_seconds", "confidence", "timed")}
    report = build_report(results, records=records())
    validate_report(report)
    assert report["validation"] is None and report["headline"]["val_top1"] is None and report["settings"]["timed"] == "all"
    from pipeline.report import tables

    assert not any("±" in row[8] + row[9] for row in tables.summary(report)[1])  # p50, p90: no interval to show
    assert "Top-1 (validation)" not in [row[0] for row in tables.headline(report)[1]]


def test_every_object_of_the_schema_is_closed():
    schema = json_schema()
    objects = {name: d for name, d in schema["$defs"].items() if "properties" in d}
    assert {"Report", "RunInfo", "LatencyRow", "Machine", "Gate", "Check", "TargetInfo", "Headline", "Verdict"} - {"Report"} <= set(objects)
    open_ = [name for name, d in {**objects, "Report": schema}.items() if d.get("additionalProperties") is not False]
    assert open_ == []


def test_schema_rejects_what_a_consumer_could_not_read(results):
    report = build_report(results, records=records())
    validate_report(report)
    for breakage in (
        lambda r: r["latency"][0].pop("latency_ms"),  # a row that ran but has no numbers
        lambda r: r["gates"][0].pop("message"),
        lambda r: r.update(schema_version=SCHEMA_VERSION + 1),
        lambda r: r["run"].update(extra=1),  # nested objects are closed
        lambda r: r["latency"][0].update(agreement_with_hots=0.9),
        lambda r: r["verdict"].update(status="ALL GOOD"),
    ):
        broken = json.loads(json.dumps(report))
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_report(broken)


def test_the_builder_refuses_a_row_the_schema_would_refuse_in_one_line(results):
    from pipeline.errors import PipelineError

    results["latency"][0]["latency_mss"] = 1.0  # a misspelt field is caught where the report is written
    with pytest.raises(PipelineError, match=r"benchmark.json \(with the run's records\): latency.0.latency_mss: Extra inputs"):
        build_report(results)
    device = device_results()
    device["rows"][1]["host_acc"] = 0.9  # a results file from another version
    device["results_file"] = "coral.json"
    with pytest.raises(PipelineError, match=r"^coral.json: rows.1: host_acc: Extra inputs are not permitted; this pipeline reads report schema 2"):
        build_report(results | {"latency": make_results()["latency"]}, [device])


def test_a_default_edge_tpu_run_says_first_that_no_edge_tpu_was_measured_and_the_compiler_did_not_run(tmp_path, results):
    report = build_report(results, records=records())
    assert report["verdict"]["status"] == "NOT MEASURED" and report["verdict"]["failures"] == []
    write_report(report, tmp_path, ["md", "html"])
    for name in ("report.md", "report.html"):
        top = first_lines(tmp_path / name)
        assert "Verdict: NOT MEASURED" in top, name
        assert "No Edge TPU was measured: every latency in this report is the host CPU's (Test CPU)" in top, name
        assert "The edgetpu_compiler (the vendor compiler) did not run: not compiled: edgetpu_compiler not found" in top, name
        assert "NOT MEASURED: min_speedup_vs_teacher: no Edge TPU result merged" in top, name  # x86 speed-up is no Edge TPU's
        assert "on the host CPU, not the target" in top, name
        assert "all gates passed" not in (tmp_path / name).read_text()
    md = (tmp_path / "report.md").read_text()
    assert "| Top-1 | 93.00 % [86.3–96.6] on 100 test images (host) |" in md  # Wilson 95 %, by hand: 0.8626–0.9657
    assert "| p50 latency | 0.120 ms ±2.0 % on the host CPU, not the target (Test CPU, threads=all) |" in md
    assert "| Op mapping | fully mapped: 10/10 ops on the Edge TPU, 0.07 MiB of parameters (fits) (the pipeline's static check, not the compiler) |" in md
    assert ("| Deploy artifact | tflite_int8 (tflite_int8.bin), 0.090 MB; exported from the QAT weights: QAT kept 95.00% validation "
            "top-1 against the distilled 95.50% (guard: 1 pt) |") in md


def test_after_merging_a_failed_edge_tpu_deploy_row_the_verdict_is_fail(tmp_path, results):
    report = build_report(results, [device_results(edgetpu="failed")], records=records())
    validate_report(report)
    assert report["verdict"]["status"] == "FAIL"
    assert all(g["status"] == "FAIL" and g["device"] == "coral" for g in report["gates"])
    device_check = next(c for c in report["checks"] if c["kind"] == "device run")
    assert device_check["status"] == "FAIL" and device_check["deploy"] and "no Edge TPU visible" in device_check["message"]
    write_report(report, tmp_path, ["md", "html"])
    for name in ("report.md", "report.html"):
        top = first_lines(tmp_path / name)
        assert "Verdict: FAIL" in top and "tflite_edgetpu FAILED on the device coral (threads=4)" in top, name
        assert "No Edge TPU was measured" in top, name  # the board's CPU ran int8; the Edge TPU never answered


def test_a_device_result_from_the_edge_tpu_is_what_the_headline_and_gates_read(tmp_path, results):
    report = build_report(results, [device_results(edgetpu="ok", p50=1.5, accuracy=0.9)], records=records())
    h = report["headline"]
    assert h["accelerator_measured"] and h["latency_where"] == "device" and h["p50_ms"] == pytest.approx(0.3)
    assert (h["device"], h["device_artifact"], h["device_images"]) == ("coral", "tflite_edgetpu", 200)
    assert h["device_top1_ci95"] == pytest.approx(list(wilson_interval(180, 200)), abs=1e-6)
    by = {g["name"]: g for g in report["gates"]}
    drop = by["max_drop_vs_teacher"]  # host: 97 − 93 = 4 pts; the board is 1 pt under the host on its 200 images
    assert drop["where"] == "device" and drop["value"] == pytest.approx(5.0) and drop["status"] == "PASS"
    conversion = by["max_conversion_drop"]  # 2 pts on the host passed a 2-pt limit; the board's extra point fails it
    assert conversion["value"] == pytest.approx(3.0) and conversion["status"] == "FAIL"
    assert by["min_speedup_vs_teacher"]["status"] == "NOT MEASURED"  # no teacher on the board
    assert report["verdict"]["status"] == "FAIL"
    assert report["verdict"]["failures"] == [conversion["message"].replace("max_conversion_drop FAIL: ", "max_conversion_drop: ")]
    assert not any("No Edge TPU" in m for m in report["verdict"]["not_measured"])
    assert not any("did not run" in m for m in report["verdict"]["not_measured"])  # a compiled model ran: it was compiled
    write_report(report, tmp_path, ["md"])
    md = (tmp_path / "report.md").read_text()
    assert "| p50 latency | 0.300 ms on coral (target device), threads=4 |" in md
    assert "| Edge TPU | measured on the device |" in md


def test_device_rows_show_their_sample_size_the_hosts_top1_on_it_and_agreement(tmp_path, results):
    write_report(build_report(results, [device_results(edgetpu="ok")], records=records()), tmp_path, ["md", "html"])
    md = (tmp_path / "report.md").read_text()
    assert "## On the device" in md
    assert ("| coral | student | tflite_int8 | 4 | OK | 200 | 90.00 [85.1–93.4] | 91.00 (tflite_int8) | 99.00 | 1.500 | 1.800 | "
            "n/a: no teacher on this device |") in md
    assert "| coral | student | tflite_edgetpu (deploy) | 4 | OK | 200 | 90.00 [85.1–93.4] | 91.00 (tflite_int8) | 99.50 | 0.300 |" in md
    assert "Agreement with host (%)" in (tmp_path / "report.html").read_text()


def test_an_export_fidelity_failure_is_in_the_report_with_its_message(tmp_path, results):
    report = build_report(results, records=records(export=export_metrics({"openvino_int8": FIDELITY_MISS})))
    miss = next(c for c in report["checks"] if c["subject"] == "openvino_int8")
    assert miss == {"kind": "export fidelity", "subject": "openvino_int8", "status": "FAIL", "deploy": False, "message": FIDELITY_MISS}
    assert report["verdict"]["status"] == "NOT MEASURED"  # not the Edge TPU's deploy artifact: shown, not fatal
    write_report(report, tmp_path, ["md", "html"])
    assert f"| export fidelity | openvino_int8 | FAIL | no | {escape(FIDELITY_MISS)} |" in (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert '<td>export fidelity</td><td>openvino_int8</td><td><span class="fail">FAIL</span></td>' in page
    assert html.escape(FIDELITY_MISS) in page

    deploy_miss = build_report(results, records=records(export=export_metrics({"tflite_int8": FIDELITY_MISS})))
    assert deploy_miss["verdict"]["status"] == "FAIL"
    assert deploy_miss["verdict"]["failures"] == [f"export fidelity tflite_int8: FAIL: {FIDELITY_MISS}"]


def test_every_check_has_a_plain_text_verdict_and_no_emoji(tmp_path, results):
    report = build_report(results, [device_results()], records=records())
    kinds = {(c["kind"], c["status"]) for c in report["checks"]}
    assert {("export fidelity", "PASS"), ("op check", "PASS"), ("target check", "PASS"), ("compiler", "NOT RUN"),
            ("device run", "FAIL")} <= kinds
    op = next(c for c in report["checks"] if c["kind"] == "op check")
    assert op["message"] == "full-integer: 8 ops, all integer, uint8 I/O"
    write_report(report, tmp_path, ["md", "html"])
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert not re.search("[\U0001F300-\U0001FAFF\u2600-\u27BF]", text), name  # ✅ ❌ and friends render as boxes on Debian


def test_html_is_self_contained(tmp_path, results):
    samples = {sample_key(r): np.full(10, 0.5, np.float32) for r in results["latency"] if not r["error"]}
    write_report(build_report(results, records=records()), tmp_path, ["html"], samples)
    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3  # Pareto, stages, latency distributions
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "RuntimeError: no" in page and "edgetpu_compiler not found" in page


def test_markdown_has_every_section_and_the_stage_chain(tmp_path, results):
    write_report(build_report(results, records=records()), tmp_path, ["md"])
    md = (tmp_path / "report.md").read_text()
    for heading in ("## Formats", "## Accuracy through the stages", "## Gates", "## Checks", "## Target", "## Environment", "## Method"):
        assert heading in md
    assert ("| student | tflite_int8 (deploy) | ci | 1 | OK | 0.090 | 93.00 [86.3–96.6] | 100 | 0.200 ±2.0 % | 0.240 ±2.0 % "
            "| 10.00× |") in md
    assert "| student | openvino_fp32 | ci | 1 | FAILED: RuntimeError: no |" in md
    assert "| TFLite int8 (LiteRT) | 93.00 [86.3–96.6] | onnx | +2.00 | +4.00 |" in md  # 2 pts lost in the int8 conversion
    assert "run demo (runs/demo)" in md


def test_a_failed_gate_is_in_the_report_with_both_numbers(tmp_path):
    report = build_report(make_results(int8_errors=3), records=records())  # int8 3 pts under the QAT weights (limit 2)
    write_report(report, tmp_path, ["json", "md"])
    stored = json.loads((tmp_path / "report.json").read_text())
    assert [g["name"] for g in stored["gates"] if g["status"] == "FAIL"] == ["max_conversion_drop"]
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Benchmark report: demo: FAIL\n")
    assert ("max_conversion_drop FAIL: tflite_int8 top-1 92.00% vs fp32 of the same weights (student_qat_fp32) 95.00%: "
            "drop 3.00 pts on the host's test split (limit 2 pts)") in md
    assert ("max_drop_vs_teacher PASS: tflite_int8 top-1 92.00% vs teacher fp32 (teacher_fp32) 97.00%: drop 5.00 pts "
            "on the host's test split (limit 5 pts)") in md


def test_device_rows_merge_beside_the_host_rows(results):
    first, second = device_results(p50=2.0), device_results(p50=1.5)
    second["results_file"] = "coral.json"
    report = build_report(results, [first, second])
    dev = [r for r in report["latency"] if r["where"] == "device"]
    assert len(dev) == 2  # the second file re-measured the same keys: replaced, not doubled
    int8 = next(r for r in dev if r["artifact"] == "tflite_int8")
    assert int8["device"] == "coral" and int8["latency_ms"]["p50"] == 1.5 and int8["agreement_with_host"] == 0.99
    assert int8["speedup_vs_teacher"] is None  # no teacher measured on the board
    assert [(d["name"], d["target"], d["results_file"]) for d in report["environment"]["devices"]] == [("coral", "edge_tpu", "coral.json")]
    assert len([r for r in report["latency"] if r["where"] == "host"]) == len(results["latency"])


def test_a_device_of_another_target_is_shown_but_not_gated(results):
    report = build_report(results, [device_results(name="pi4", target="rpi4")], records=records())
    assert all(g["where"] != "device" for g in report["gates"]) and report["verdict"]["status"] == "NOT MEASURED"
    run = next(c for c in report["checks"] if c["kind"] == "device run")
    assert run["status"] == "FAIL" and not run["deploy"]


def test_pareto_plot_one_point_per_artifact_per_machine_labels_apart_deploy_ringed(results):
    from matplotlib.collections import PathCollection

    from pipeline.report.plots import pareto_figure

    fig = pareto_figure(build_report(results, [device_results(edgetpu="ok")]))
    host, board = fig.axes
    assert "on ci (host CPU, not the target)" in host.get_xlabel() and "threads=all (2)" in host.get_xlabel()
    assert "on coral (device)" in board.get_xlabel() and "threads=4" in board.get_xlabel()
    renderer = fig.canvas.get_renderer()
    for ax, expected in ((host, {"teacher (pytorch)", "student pytorch", "onnx", "tflite_int8 (deploy)"}),
                         (board, {"tflite_int8", "tflite_edgetpu (deploy)"})):
        texts = [t for t in ax.texts]
        assert {t.get_text() for t in texts} == expected  # one point per artifact: the 1-thread rows are not plotted
        boxes = []
        for t in texts:
            t.update_positions(renderer)
            boxes.append(type(t).__mro__[1].get_window_extent(t, renderer))
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        deploy = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_linewidths()[0] == 2.0]
        assert len(deploy) == 1  # the deploy point, and only it, has the heavy ring
    plt = __import__("matplotlib.pyplot").pyplot
    plt.close(fig)


def test_place_labels_keeps_crowded_labels_apart():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.report.plots import place_labels

    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(0.30, 93.0), (0.31, 93.0), (0.30, 93.1), (0.32, 92.9), (0.29, 93.0)]  # tflite_fp32 and openvino_fp32 on one spot
    ax.scatter(*zip(*pts))
    ax.set_xlim(0.2, 0.45)
    ax.set_ylim(90, 96)
    fig.tight_layout()
    texts = place_labels(ax, pts, [f"label number {i}" for i in range(len(pts))])
    renderer = fig.canvas.get_renderer()
    boxes = []
    for t in texts:
        t.update_positions(renderer)
        boxes.append(type(t).__mro__[1].get_window_extent(t, renderer))
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_wilson_interval_matches_hand_values():
    lo, hi = wilson_interval(93, 100)  # p = 0.93, z = 1.959964: centre 0.914093, half-width 0.051589
    assert lo == pytest.approx(0.862505, abs=2e-6) and hi == pytest.approx(0.965681, abs=2e-6)
    lo, hi = wilson_interval(2, 2)  # not zero-width at 100 %: centre 0.671200, half-width 0.328810
    assert lo == pytest.approx(0.342390, abs=2e-5) and hi == 1.0
    assert wilson_interval(0, 0) is None


def test_report_command_merges_device_files_and_keeps_the_schema_beside_the_report(tmp_path, capsys):
    from pipeline.report.cli import report_command

    run = write_run(tmp_path / "run")
    dev = tmp_path / "coral.json"
    dev.write_text(json.dumps(device_results()))
    assert report_command(run, device_results=[dev]) == 0
    assert (run / "device" / "coral.json").is_file()  # kept, so a later report run still merges it
    report = json.loads((run / "report.json").read_text())
    jsonschema.validate(report, json.loads((run / report["$schema"]).read_text()))
    assert {r["where"] for r in report["latency"]} == {"host", "device"} and report["verdict"]["status"] == "FAIL"
    assert report["run"]["folder"] == str(run) and report["checks"]  # the run's records were read
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    assert report_command(run) == 0  # again, no arguments: the kept device file is still merged
    assert any(r["where"] == "device" for r in json.loads((run / "report.json").read_text())["latency"])


def test_publish_removes_report_files_of_formats_no_longer_asked_for(tmp_path, results):
    from pipeline.report.stage import publish

    out, run = tmp_path / "08_report", tmp_path
    out.mkdir()
    (run / "report.html").write_text("stale")
    publish(write_report(build_report(results), out, ["md"]), run)
    assert (run / "report.md").is_file() and not (run / "report.html").exists()
    publish(write_report(build_report(results), out, ["json"]), run)
    assert (run / "report.json").is_file() and (run / SCHEMA_FILE).is_file() and not (run / "report.md").exists()
    assert FILES["json"] == "report.json"


def test_an_npu_target_without_its_npu_says_so_and_has_no_compiler_to_run(results):
    results["run"]["target"] = "openvino_npu"
    note = "openvino_npu: no NPU on this machine (OpenVINO sees: CPU), so its numbers here are CPU numbers"
    target = {"verdict": "ready on CPU (NPU absent here)", "passed": True, "summary": "ready on CPU (NPU absent here): 40 ops",
              "artifact": "tflite_int8", "device": "NPU", "device_available": False, "device_note": note}
    report = build_report(results, records=records(target=target))
    assert report["verdict"]["status"] == "NOT MEASURED"
    assert report["verdict"]["not_measured"][0].startswith("No Intel NPU was measured: every latency in this report is the host CPU's")
    assert {"kind": "target device", "subject": "NPU", "status": "NOT RUN", "deploy": True, "message": note} in report["checks"]
    assert report["target"]["compiler"] is None and report["headline"]["compiler"] == "no vendor compiler for this target"


def test_precision_text_says_when_the_time_cap_stopped_short():
    from pipeline.benchmark.rows import precision_text

    assert precision_text(None) == ""  # results from before the precision rule
    assert precision_text({"half_width_pct": 2.14, "reached": True, "target_pct": 3.0, "stopped_by": "precision"}) == "±2.1 %"
    capped = {"half_width_pct": 4.2, "reached": False, "target_pct": 3.0, "stopped_by": "max_seconds"}
    assert precision_text(capped) == "±4.2 % (time cap reached; target ±3 %)"
    assert precision_text({**capped, "half_width_pct": None}) == "± n/a (time cap reached; target ±3 %)"
    assert precision_text({"half_width_pct": 1.0, "reached": None, "target_pct": None, "stopped_by": "fixed"}) == "±1.0 %"
