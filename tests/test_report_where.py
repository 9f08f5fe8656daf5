"""The report's "where accuracy and time go" table: layer error and per-op time joined by node, on hand-made numbers."""

from __future__ import annotations

import json

import jsonschema
import pytest
from report_fakes import device_results, export_metrics, make_results, target_metrics

from pipeline.report.build import RunRecords, build_report
from pipeline.report.schema import SCHEMA_FILE
from pipeline.report.where import Sources, join, kept_in_float, section
from pipeline.report.write import write_report


def _record(name: str, op: str, sqnr: float, clipped: float = 0.0) -> dict:
    return {"name": name, "op": op, "shape": [1, 4], "index": 0, "sqnr_db": sqnr, "rel_error": 0.1, "cosine": 0.9,
            "clipped": clipped, "scale": 0.1, "zero_point": 0}


def _op(node: str, op_type: str, ms: float, total: float = 1.0) -> dict:
    return {"node": node, "op_type": op_type, "ms": ms, "share": ms / total}


LAYER_ERROR = {"file": "openvino_int8/layer_error.json", "artifact": "openvino_int8/student.xml", "reference": "student.onnx",
               "images": 8, "layers": 3, "records": [_record("/a/Relu", "Relu", 5.0, 0.02), _record("/a/Conv", "Add", 10.0, 0.1),
                                                     _record("/b/Conv", "Add", 20.0)]}
OP_TIME = {"measured": True, "engine": "openvino", "runs": 50, "total_ms": 1.0,
           "ops": [_op("/b/Conv/WithoutBiases", "Convolution", 0.5), _op("/a/Conv/WithoutBiases", "Convolution", 0.2),
                   _op("/pool/Mean", "ReduceMean", 0.2), _op("/a/Conv/WithoutBiases/fq", "Subgraph", 0.1)]}


def test_engine_nodes_join_the_layer_they_start_with_worst_sqnr_first_then_time_only_nodes():
    rows = join(LAYER_ERROR, OP_TIME, kept=["/b/Conv"])
    assert [(r["node"], r["sqnr_db"], r["ms"], r["kept_float"]) for r in rows] == [
        ("/a/Relu", 5.0, None, False),  # fused into the convolution before it: no time of its own
        ("/a/Conv", 10.0, 0.3, False),  # both engine nodes that start with it
        ("/b/Conv", 20.0, 0.5, True),
        ("/pool/Mean", None, 0.2, False),  # time only: after every node with SQNR
    ]
    assert rows[1]["engine_nodes"] == ["/a/Conv/WithoutBiases", "/a/Conv/WithoutBiases/fq"] and rows[1]["clipped"] == 0.1
    assert rows[1]["time_share"] == pytest.approx(0.3) and sum(r["time_share"] or 0 for r in rows) == pytest.approx(1.0)
    assert rows[3]["op_type"] == "ReduceMean"
    bare = join(LAYER_ERROR, None, kept=None)  # no per-op time, nothing recorded about float layers
    assert [r["ms"] for r in bare] == [None] * 3 and {r["kept_float"] for r in bare} == {None}


def test_a_graphs_names_join_an_engine_node_to_the_node_whose_output_tensor_it_starts_with():
    ids = {"/fc/Gemm": "/fc/Gemm", "logits": "/fc/Gemm", "/a/Conv": "/a/Conv"}  # explore.graph_nodes: node and output names
    rows = join({"records": [_record("logits", "Add", 7.0)]}, {"measured": True, "ops": [_op("/fc/Gemm/Dequantize", "FC", 0.4)]},
                kept=[], ids=ids)
    assert [(r["node"], r["ms"], r["engine_nodes"]) for r in rows] == [("logits", 0.4, ["/fc/Gemm/Dequantize"])]


def test_kept_in_float_reads_accuracy_control_and_keep_float_from_the_sidecar():
    used = {"quantization": {"accuracy_control": {"used": True, "float_layers": ["/b/Conv"]}, "keep_float": {"kept": ["/a/Conv"]}}}
    assert kept_in_float(used) == (["/a/Conv", "/b/Conv"], "the int8 sidecar's quantization.accuracy_control.float_layers "
                                                          "and quantization.keep_float.kept")
    assert kept_in_float({"quantization": {"accuracy_control": {"used": False, "float_layers": ["x"]}}})[0] == []
    kept, why = kept_in_float({"quantization": {"tool": "nncf.quantize"}})
    assert kept is None and why.startswith("not recorded")


def test_a_boards_measured_profile_replaces_the_hosts_and_is_named():
    sources = {"openvino_int8": Sources(layer_error=LAYER_ERROR, op_time=OP_TIME),
               "tflite_int8": Sources(op_time={"measured": False, "engine": "tflite", "reason": "no op profiler"})}
    board = {**OP_TIME, "total_ms": 2.0, "ops": [_op("/a/Conv/WithoutBiases", "Convolution", 2.0, 2.0)]}
    boards = [{"device": {"name": "pi5"}, "op_time": {"openvino_int8": board,
                                                      "tflite_int8": {"measured": False, "reason": "LiteRT on the board"}}}]
    out = section(sources, boards, host="ci-host")
    ov, tfl = out["openvino_int8"], out["tflite_int8"]
    assert (ov["time_where"], ov["time_machine"], ov["total_ms"]) == ("device", "pi5", 2.0)
    assert [r["ms"] for r in ov["rows"]] == [None, 2.0, None]
    assert tfl["time_missing"] == "LiteRT on the board" and tfl["time_machine"] is None
    host_only = section(sources, [], host="ci-host")["openvino_int8"]
    assert (host_only["time_where"], host_only["time_machine"]) == ("host", "ci-host")


def test_the_table_is_in_all_three_formats_with_the_worst_fifteen_and_why_a_column_is_empty(tmp_path):
    many = {**LAYER_ERROR, "records": [_record(f"/n{i}/Conv", "Add", 40.0 - i) for i in range(20)]}
    sources = {"openvino_int8": Sources(layer_error=many, op_time=OP_TIME,
                                        sidecar={"quantization": {"accuracy_control": {"used": False}}}),
               "tflite_int8": Sources(op_time={"measured": False, "engine": "tflite", "reason": "LiteRT has no op profiler"})}
    report = build_report(make_results(), [device_results()], records=RunRecords(
        folder="runs/demo", export=export_metrics(), target=target_metrics(), where=sources))
    ov = report["where"]["openvino_int8"]
    # 20 layers, then the 4 engine nodes that start with none of them (each its own row)
    assert len(ov["rows"]) == 24 and ov["rows"][0]["node"] == "/n19/Conv" and ov["kept_missing"] is None
    write_report(report, tmp_path, ["json", "md", "html"])
    stored = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(stored, json.loads((tmp_path / SCHEMA_FILE).read_text()), cls=jsonschema.Draft202012Validator)
    md = (tmp_path / "report.md").read_text()
    section_md = md[md.index("## Where accuracy and time go"):md.index("## Target")]
    assert "| /n19/Conv | Add | 21.0 | 0.00 % | — | — | no |" in section_md
    assert "The 15 worst of 24 nodes; 9 more in report.json." in section_md and "/n4/Conv" not in section_md
    assert "ms, share of time: NOT MEASURED: LiteRT has no op profiler." in section_md
    assert "SQNR, clipped: NOT MEASURED: no layer_error.json beside the artifact" in section_md
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Where accuracy and time go</h2>" in page and "<td>/n19/Conv</td>" in page
    assert build_report(make_results(), records=RunRecords(folder="runs/demo"))["where"] is None
