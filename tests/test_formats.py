"""The format table: every row consistent, and a row added at test time reaches everything that names formats."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.benchmark.accuracy import accuracy_rows, stage_chain
from pipeline.config import ExportConfig, validate_config
from pipeline.device.bundle import runtime_formats
from pipeline.errors import PipelineError
from pipeline.export.fidelity import compare
from pipeline.formats import (EXPORT_SOURCE, FAMILIES, FIDELITY_RULES, FORMATS, PRECISIONS, Format, format_keys,
                                     get_format, primary)
from pipeline.runtimes import RUNTIMES
from pipeline.target import TARGETS


def _runtime_name(suffix: str) -> str:
    entry = RUNTIMES[suffix]
    assert getattr(importlib.import_module(entry.module), entry.cls).name == entry.name
    return entry.name


@pytest.mark.parametrize("key", list(FORMATS))
def test_every_row_is_consistent(key):
    fmt = FORMATS[key]
    assert fmt.key == key
    assert fmt.family in FAMILIES and fmt.precision in PRECISIONS and fmt.fidelity in FIDELITY_RULES
    # the runtime that executes it is the one load() picks by the file's suffix
    assert _runtime_name(Path(fmt.file).suffix) == fmt.runtime
    # made from the weights or from a format written before it (the exporter runs the table in order)
    order = list(FORMATS)
    assert fmt.source == EXPORT_SOURCE or order.index(fmt.source) < order.index(key)
    # an identical logits/labels pair passes any rule
    ref = np.random.default_rng(0).standard_normal((20, 5)).astype(np.float32)
    row = compare(key, ref, ref, ref.argmax(1))
    assert row["passed"] and row["precision"] == fmt.precision


def test_file_names_and_labels_are_unique_and_each_family_precision_has_a_primary_key():
    assert len({f.file for f in FORMATS.values()}) == len(FORMATS)
    assert len({f.label for f in FORMATS.values()}) == len(FORMATS)
    for fmt in FORMATS.values():
        assert FORMATS[primary(precision=fmt.precision, family=fmt.family)].family == fmt.family


def test_targets_and_defaults_name_formats_of_the_table():
    for rules in TARGETS.values():
        assert get_format(rules.deploy_artifact).runtime == rules.runtime, rules.name
    assert set(ExportConfig().formats) <= set(FORMATS)


def test_unknown_keys_are_errors_not_defaults():
    with pytest.raises(KeyError, match="unknown export format 'tflite_in8'.*did you mean 'tflite_int8'"):
        get_format("tflite_in8")
    with pytest.raises(KeyError, match="unknown runtime 'tensorrt'"):
        format_keys(runtime="tensorrt")
    with pytest.raises(PipelineError, match="unknown runtime 'tensorrt'"):
        runtime_formats("tensorrt")
    with pytest.raises(KeyError, match="unknown export format"):
        compare("tflite_in8", np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="tflite_in8: neither a stage nor an export format"):
        accuracy_rows({"tflite_in8": np.zeros(3, np.int64)}, np.zeros(3, np.int64))
    with pytest.raises(PipelineError, match=r"export\.formats: unknown 'tflite_in8' .*did you mean 'tflite_int8'"):
        validate_config({"export": {"formats": ["onnx", "tflite_in8"]}})


# a second fp32 TFLite variant in an existing family, as a new row would add it
VARIANT = Format("tflite_fp32_b", "student_fp32_b.tflite", "tflite", "fp32", "tflite", "TFLite fp32, variant b (LiteRT)",
                 "onnx", "logits")


def test_a_row_added_to_the_table_reaches_config_exporter_fidelity_chain_and_bundle(monkeypatch):
    monkeypatch.setitem(FORMATS, VARIANT.key, VARIANT)

    cfg = validate_config({"export": {"formats": ["onnx", "tflite_int8", VARIANT.key]}})  # no Literal to extend
    assert VARIANT.key in cfg.export.formats
    assert format_keys(family="tflite", among=cfg.export.formats) == ["tflite_int8", VARIANT.key]  # the exporter's dispatch
    assert get_format(VARIANT.key).file == "student_fp32_b.tflite"

    ref = np.random.default_rng(0).standard_normal((50, 5)).astype(np.float32)
    row = compare(VARIANT.key, ref + 0.5, ref, ref.argmax(1))  # fp32 rule: logits must match
    assert row["precision"] == "fp32" and not row["passed"] and "max |Δlogit|" in row["message"]

    assert stage_chain()[VARIANT.key] == (VARIANT.label, "onnx")
    labels = np.arange(10) % 3
    rows = {r["stage"]: r for r in accuracy_rows({"onnx": labels, VARIANT.key: labels}, labels, export_source="student_fp32")}
    assert rows[VARIANT.key]["parent"] == "onnx" and rows[VARIANT.key]["drop_vs_parent_pts"] == 0.0

    assert VARIANT.key in runtime_formats("tflite")  # a board running LiteRT gets it in its bundle
    assert primary(precision="fp32", family="tflite") == "tflite_fp32"  # a file read without a sidecar keeps its key


# a new format as a contributor adds it: one row in the table plus one module with its converter and its detector
MARKED_MODULE = '''"""student.onnx with a mark in its metadata: a stand-in for a new format's converter and detector."""

import onnx

from pipeline.export.common import Artifact
from pipeline.formats import FORMATS
from pipeline.formats.sidecar import nchw_io


def convert(inputs, state, keys):
    made = []
    for key in keys:
        model = onnx.load(str(state.paths["onnx"]))
        onnx.helper.set_model_props(model, {"made_as": key})
        path = inputs.out / FORMATS[key].file
        onnx.save(model, str(path))
        made.append(Artifact(key, path, nchw_io(inputs.input_shape, inputs.num_classes)))
    return made


def detect(path):
    return any(p.key == "made_as" for p in onnx.load(str(path), load_external_data=False).metadata_props)
'''
MARKED = Format("onnx_marked", "student_marked.onnx", "onnx", "fp32", "onnxruntime", "ONNX, marked (ONNX Runtime)", "onnx",
                "logits", converter="marked_format:convert", detector="marked_format:detect")


def test_a_format_with_its_converter_and_detector_is_two_files_and_exports_and_is_detected(tmp_path, monkeypatch):
    import dataclasses
    import inspect
    import io

    import torch
    from rich.console import Console
    from torch import nn

    import pipeline.formats
    from pipeline.export.common import ExportInputs, ExportState
    from pipeline.export.untrained import export_untrained
    from pipeline.export.walk import export_formats
    from pipeline.formats import resolve
    from pipeline.formats.detect import detect_format
    from pipeline.formats.sidecar import read_sidecar
    from pipeline.runtimes import load

    (tmp_path / "marked_format.py").write_text(MARKED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(FORMATS, MARKED.key, MARKED)
    files = {inspect.getfile(resolve(MARKED.converter)), inspect.getfile(resolve(MARKED.detector)), inspect.getfile(pipeline.formats)}
    assert len(files) == 2  # the table and the new module: nothing else names the format

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    shape, x = (3, 8, 8), np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    preprocess = {"image_size": 8, "channels": 3, "mean": [0.0] * 3, "std": [1.0] * 3}
    out = tmp_path / "export"
    out.mkdir()
    inputs = ExportInputs(out, None, "test", shape, 5, preprocess, list("abcde"), x, None, True, "int8",
                          Console(file=io.StringIO()), model=model)
    state = ExportState(console=inputs.console, class_names=inputs.class_names)
    export_formats(inputs, state, validate_config({"export": {"formats": [MARKED.key]}}).export.formats)

    assert list(state.paths) == ["onnx", MARKED.key]  # its source first, by the walk, then its own converter
    made = state.paths[MARKED.key]
    assert made == out / MARKED.file and read_sidecar(made)["format"] == MARKED.key
    assert detect_format(made) == MARKED.key and detect_format(state.paths["onnx"]) == "onnx"
    with load(made) as marked, load(state.paths["onnx"]) as plain:
        assert marked.format == MARKED.key
        np.testing.assert_array_equal(marked.predict(x), plain.predict(x))

    rules = dataclasses.replace(TARGETS["rpi4"], deploy_artifact=MARKED.key)  # the untrained check walks the same rows
    (tmp_path / "untrained").mkdir()
    assert detect_format(export_untrained(model, shape, 5, rules, tmp_path / "untrained")) == MARKED.key


def test_the_compiled_edge_tpu_model_is_a_row_the_exporter_skips(tmp_path):
    from pipeline.benchmark.given import formats_of
    from pipeline.formats.detect import detect_format
    from pipeline.target import TARGETS

    EDGETPU_KEY = TARGETS["edge_tpu"].compiler.output_format  # the target's compiler names its output's row
    compiled = get_format(EDGETPU_KEY)
    assert not compiled.exported and compiled.delegate and compiled.source == "tflite_int8"
    assert EDGETPU_KEY not in format_keys(exported=True) and EDGETPU_KEY not in runtime_formats("tflite")
    with pytest.raises(PipelineError, match="export.formats: 'tflite_edgetpu' .* is made after export, from tflite_int8"):
        validate_config({"export": {"formats": ["onnx", EDGETPU_KEY]}})
    compiled = tmp_path / "student_int8_edgetpu.tflite"  # as the compiler names it: known without parsing
    compiled.write_bytes(b"TFL3 stand-in")
    assert detect_format(compiled) == EDGETPU_KEY
    with pytest.raises(PipelineError, match="delegate: benchmark the tflite_int8 it was compiled from here, and this one on the board"):
        formats_of([str(compiled)])
