"""The report's "Automatic int8 decisions" section, from records made by ``pipeline/decision.py`` itself."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
from report_fakes import export_metrics, make_results, target_metrics

from pipeline.decision import decision, supported_clause, unsupported, untried
from pipeline.report.build import RunRecords, build_report, read_records
from pipeline.report.decisions import EXPORT_CHOICES
from pipeline.report.schema import SCHEMA_FILE
from pipeline.report.write import write_report
from pipeline.stage_metrics import ExportMetrics

TITLE = "## Automatic int8 decisions"


def _hits(images: int, both: int, only_new: int, only_old: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two models on the same images: ``only_new`` won by the first, ``only_old`` by the second."""
    new, old = np.zeros(images, bool), np.zeros(images, bool)
    new[:both] = old[:both] = True
    new[both:both + only_new] = True
    old[both + only_new:both + only_new + only_old] = True
    return new, old


GUARD_DECISION = decision(*_hits(144, 130, 3, 2))  # QAT int8 one image ahead of PTQ on 144 images
GUARD = {"export": "qat", "tolerance_points": 0.6944, "val_images": 144, "qat_int8": 92.3611, "distill_int8": 91.6667,
         "decision": GUARD_DECISION,
         "reason": "QAT weights: int8 on 144 validation images: QAT weights 92.36 %, PTQ of the distilled weights 91.67 % "
                   "(fp32 93.06 %); the interval [-3.18, +4.71] pts on 144 images cannot show QAT better beyond doubt"}
CONTROL_DECISION = decision(*_hits(144, 120, 2, 0))  # accuracy control two images ahead: not beyond doubt
KEEP_DECISION = decision(*_hits(600, 500, 30, 2))  # keep_float on 600 images: beyond doubt


def _export() -> dict:
    said = "plain int8 keeps 97.50% of fp32 (< 99%)"
    return {**export_metrics(),
            "keep_float": {
                "onnx_int8": {"mode": "auto", "kept": ["/stages/stages.0/stages.0.0/Conv"], "decision": KEEP_DECISION,
                              "reason": f"{said}; with 1 layer(s) in float, int8 keeps 99.20% of fp32; "
                                        f"{supported_clause(KEEP_DECISION)}"},
                "openvino_int8": {"mode": "patterns", "patterns": ["fc"], "kept": ["/fc/Gemm"],  # no decision: no row
                                  "reason": "1 layer(s) kept in float by export.keep_float"}},
            "openvino_accuracy_control": {"mode": "auto", "used": False, "decision": CONTROL_DECISION,
                                          "reason": f"{said}; accuracy control reached 84.72%, "
                                                    f"{unsupported(CONTROL_DECISION, 'plain int8')}"},
            "tflite_converter": {"mode": "auto", "chosen": "onnx2tf", "decision": untried(144),
                                 "reason": "litert-torch not tried: litert_torch makes int8 I/O only, the target wants uint8"}}


def _report(**records) -> dict:
    return build_report(make_results(), records=RunRecords(folder="runs/demo", target=target_metrics(), **records))


def test_every_recorded_decision_is_a_row_with_its_interval_images_and_note():
    rows = _report(export=_export(), qat={"enabled": True, "guard": GUARD})["decisions"]
    assert [(r["choice"], r["recorded_in"], r["artifact"], r["outcome"]) for r in rows] == [
        ("QAT guard", "qat.guard", None, "QAT weights kept"),
        ("TFLite converter", "export.tflite_converter", "tflite_int8", "onnx2tf kept"),
        ("keep_float auto (onnx_int8)", "export.keep_float.onnx_int8", "onnx_int8", "1 layer(s) kept in float"),
        ("OpenVINO accuracy control", "export.openvino_accuracy_control", "openvino_int8", "plain int8 kept"),
    ]
    guard, converter, keep, control = rows
    assert (guard["difference_pts"], guard["ci95_pts"], guard["images"], guard["supported"]) == (0.6944, [-3.1798, 4.7129], 144, False)
    assert "one image = 0.69 pts" in guard["note"] and guard["reason"] == GUARD["reason"]
    assert converter["difference_pts"] is None and converter["ci95_pts"] is None and converter["note"] is not None
    assert keep["supported"] is True and keep["images"] == 600 and keep["note"] is None
    assert control["reason"].endswith("cannot support it: plain int8 kept")


def test_the_table_says_the_numbers_the_interval_and_why_in_md_and_html(tmp_path):
    report = _report(export=_export(), qat={"enabled": True, "guard": GUARD})
    write_report(report, tmp_path, ["json", "md", "html"])
    stored = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(stored, json.loads((tmp_path / SCHEMA_FILE).read_text()), cls=jsonschema.Draft202012Validator)
    assert stored["decisions"][2]["ci95_pts"] == KEEP_DECISION["ci95_pts"]
    md = (tmp_path / "report.md").read_text()
    section = md[md.index(TITLE):md.index("## Target")]
    assert "| QAT guard | QAT weights kept | +0.69 pts | [-3.18, +4.71] pts | 144 validation, one image = 0.69 pts | no |" in section
    assert "| TFLite converter | onnx2tf kept | — | not compared | 144 validation, one image = 0.69 pts | — |" in section
    assert ("| keep_float auto (onnx_int8) | 1 layer(s) kept in float | +4.67 pts | [+2.85, +6.63] pts | 600 validation "
            "| yes |") in section
    assert "| OpenVINO accuracy control | plain int8 kept | +1.39 pts |" in section and "openvino_int8)" not in section
    assert ("accuracy control reached 84.72%, the interval [-1.41, +4.41] pts on 144 images cannot support it: plain int8 "
            "kept.") in section  # the record's own reason
    assert section.count("- Few images: the decision split (validation) has 144 images, fewer than the 500 asked") == 1
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Automatic int8 decisions</h2>" in page and "<td>keep_float auto (onnx_int8)</td>" in page
    assert "<td>[+2.85, +6.63] pts</td>" in page and "<td>144 validation, one image = 0.69 pts</td>" in page


def test_a_run_that_recorded_no_decision_has_no_section(tmp_path):
    plain = {**export_metrics(), "keep_float": {"onnx_int8": {"mode": "patterns", "kept": [], "reason": "0 layer(s)"}}}
    qat_off = {"enabled": False, "guard": {"export": "distill", "reason": "QAT is off (qat.enabled: false or qat.epochs: 0)"}}
    report = _report(export=plain, qat=qat_off)
    assert report["decisions"] is None and _report()["decisions"] is None
    write_report(report, tmp_path, ["md", "html"])
    assert TITLE not in (tmp_path / "report.md").read_text()
    assert "Automatic int8 decisions" not in (tmp_path / "report.html").read_text()


def test_a_guard_the_export_did_not_follow_says_so():
    forced = {**export_metrics(), "source": "qat", "source_reason": "QAT weights: export.source: qat"}
    lost = {**GUARD, "export": "distill"}
    row = _report(export=forced, qat={"enabled": True, "guard": lost})["decisions"][0]
    assert row["outcome"] == "distilled weights (PTQ) exported (not followed: the export used the QAT weights)"


def test_the_guard_is_read_from_a_run_folders_qat_manifest(tmp_path):
    from report_fakes import write_run

    from pipeline.artifacts import Manifest

    folder = write_run(tmp_path / "run", export=_export())
    (folder / "04_qat").mkdir()
    Manifest(stage="qat", cache_key="k", inputs={}, metrics={"enabled": True, "guard": GUARD}).write(folder / "04_qat")
    rows = build_report(make_results(), records=read_records(folder))["decisions"]
    assert [r["choice"] for r in rows][:2] == ["QAT guard", "TFLite converter"]


def test_every_export_remedy_has_a_row_kind_and_a_typed_metrics_field():
    from pipeline.export.stage import REMEDIES

    assert set(EXPORT_CHOICES) == set(REMEDIES) and set(REMEDIES) <= set(ExportMetrics.model_fields)
