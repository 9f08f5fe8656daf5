"""The report's int8-error-per-layer section: built from the export metrics, in Markdown and HTML, left out when absent."""

from __future__ import annotations

import base64
import json
import re

import jsonschema
import pytest
from report_fakes import export_metrics, make_results, target_metrics

from pipeline.export.layer_error import LayerError, summary, worst_first
from pipeline.report.build import RunRecords, build_report
from pipeline.report.schema import SCHEMA_FILE
from pipeline.report.write import write_report

CONV = "model/tf.nn.relu_{i}/Relu;model/tf.math.add_{i}/Add;model/tf.nn.convolution_{i}/convolution"


def _layer_error(n: int = 14) -> dict:
    """The export metrics' summary of 14 layers whose SQNR is 40 − 2i dB (conv 13 worst at 14 dB, under the red line)."""
    layers = [LayerError(name=CONV.format(i=i), op="CONV_2D", shape=[1, 4, 4, 8], index=i, sqnr_db=40.0 - 2 * i,
                         rel_error=10 ** (-(40.0 - 2 * i) / 20), cosine=0.999, clipped=0.01 * (i == 13), scale=0.02, zero_point=-128)
              for i in range(n)]
    doc = summary(worst_first(layers), images=32)
    return {"file": "layer_error.json", "artifact": "student_int8.tflite", "reference": "student_fp32.tflite", "images": 32,
            **{k: v for k, v in doc.items() if k != "records"}, "records": doc["records"][:10]}


def _openvino_layer_error() -> dict:
    """An OpenVINO int8 IR's summary: three ReLU outputs (FakeQuantize) and the float logits, stage 1 worst at 4.2 dB."""
    layers = [LayerError(name=f"/stages/stages.{i}/stages.{i}.2/Relu", op="Relu", shape=[1, 8, 4, 4], index=13 * (i + 1),
                         sqnr_db=db, rel_error=10 ** (-db / 20), cosine=0.9, clipped=0.0, scale=0.01, zero_point=0)
              for i, db in enumerate((19.1, 4.2, 6.6))]
    layers.append(LayerError(name="logits", op="Add", shape=[1, 10], index=60, sqnr_db=7.2, rel_error=0.44, cosine=0.9,
                             clipped=0.0, scale=None, zero_point=None))
    doc = summary(worst_first(layers), images=32)
    return {"file": "openvino_int8/layer_error.json", "artifact": "openvino_int8/student.xml", "reference": "student.onnx",
            "images": 32, **{k: v for k, v in doc.items() if k != "records"}, "records": doc["records"]}


@pytest.fixture
def report():
    export = {**export_metrics(), "layer_error": {"tflite_int8": _layer_error(), "openvino_int8": _openvino_layer_error()}}
    return build_report(make_results(), records=RunRecords(folder="runs/demo", export=export, target=target_metrics()))


def test_the_worst_ten_layers_are_a_table_in_markdown_and_html_with_a_bar_plot(tmp_path, report):
    assert [r["sqnr_db"] for r in report["layer_error"]["tflite_int8"]["records"]] == [14.0 + 2 * i for i in range(10)]
    write_report(report, tmp_path, ["json", "md", "html"])
    stored = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(stored, json.loads((tmp_path / SCHEMA_FILE).read_text()), cls=jsonschema.Draft202012Validator)
    md = (tmp_path / "report.md").read_text()
    assert "## Int8 error per layer" in md and "### TFLite int8 (LiteRT)" in md
    assert "| 13 | convolution_13+add_13+relu_13 | CONV_2D | 1×4×4×8 | 14.0 | 0.1995 | 0.99900 | 1.00 % | 0.02 |" in md
    assert "10 of 14 tensors (all in layer_error.json)" in md and "on 32 calibration images" in md
    assert md.index("## Checks") < md.index("## Int8 error per layer") < md.index("## Target")
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Int8 error per layer</h2>" in page and "<td>convolution_13+add_13+relu_13</td>" in page
    png = re.search(r'alt="Int8 error per layer: TFLite int8 \(LiteRT\)" src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"


def test_openvino_int8_has_its_own_table_named_by_onnx_module_paths(tmp_path, report):
    write_report(report, tmp_path, ["md", "html"])
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("### OpenVINO int8"):]
    # worst first, the ONNX node path shortened to its module, the float logits marked as such
    assert section.index("| 26 | stages/stages.1/stages.1.2 | Relu | 1×8×4×4 | 4.2 |") < section.index("| 60 | logits | Add |")
    assert "| 60 | logits | Add | 1×10 | 7.2 | 0.4400 | 0.90000 | 0.00 % | float |" in section
    assert "a FakeQuantize's output) compared with the same-named op of student.onnx" in section
    assert "4 of 4 tensors (all in openvino_int8/layer_error.json)" in section
    assert "export.openvino_accuracy_control: auto reverts the layers" in section
    tflite = md[md.index("### TFLite int8"):md.index("### OpenVINO int8")]
    assert "export.keep_float keeps named layers" in tflite and "integer-only targets (Edge TPU) refuse it" in tflite
    assert 'alt="Int8 error per layer: OpenVINO int8"' in (tmp_path / "report.html").read_text()


def test_a_run_exported_with_the_tflite_summary_alone_still_reports_it():
    """Export metrics written before OpenVINO had per-layer numbers hold one unkeyed summary."""
    report = build_report(make_results(), records=RunRecords(folder="runs/demo", export={**export_metrics(), "layer_error": _layer_error()},
                                                             target=target_metrics()))
    assert list(report["layer_error"]) == ["tflite_int8"] and report["layer_error"]["tflite_int8"]["layers"] == 14


def test_no_section_without_numbers_and_one_line_when_they_failed(tmp_path):
    plain = build_report(make_results(), records=RunRecords(folder="runs/demo", export=export_metrics(), target=target_metrics()))
    assert plain["layer_error"] is None
    write_report(plain, tmp_path, ["md", "html"])
    assert "Int8 error per layer" not in (tmp_path / "report.md").read_text() + (tmp_path / "report.html").read_text()

    failed = {"file": "layer_error.json", "artifact": "student_int8.tflite", "reference": "student_fp32.tflite", "images": 32,
              "error": "PipelineError: layer error: no tensor has a twin"}
    report = build_report(make_results(), records=RunRecords(folder="runs/demo", export={**export_metrics(), "layer_error": {"tflite_int8": failed}},
                                                             target=target_metrics()))
    write_report(report, tmp_path, ["md"])
    md = (tmp_path / "report.md").read_text()
    assert "## Int8 error per layer" in md and "No per-layer numbers for student_int8.tflite: PipelineError: layer error: no tensor" in md
