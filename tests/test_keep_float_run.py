"""``export.keep_float: auto`` in a whole ``export`` run on the outlier model (issue 29's "done when"): on a CPU target
(rpi4) every int8 path that allows float — ONNX Runtime QDQ, OpenVINO NNCF, TFLite — keeps the broken layer in float
and reaches ≥ 99 % of fp32's validation top-1; the records reach the sidecars, the stage metrics and the report's
"where accuracy and time go" table."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import with_outlier_channel
from pipeline.__main__ import main
from pipeline.export.fidelity import MIN_INT8_RETAINED
from pipeline.formats.sidecar import read_sidecar
from test_accuracy_control import OUTLIER, _trained

RECIPE = """
name: broken
runs_dir: {runs}
data:
  dataset: digits
  image_size: 8
  max_test: 300
  calibration_size: 64
export:
  formats: [onnx, onnx_int8, tflite_int8, openvino_int8]
  keep_float: auto
  layer_error_images: 32
target:
  name: rpi4
benchmark:
  threads: [1]
  warmup: 1
  min_runs: 3
  min_seconds: 0
  gates:
    max_conversion_drop: 100.0
"""
# the conv whose output carries the outlier channel, or its reader, as each family names them (onnx2tf numbers its ops)
BROKEN = {"onnx_int8": ("stages.0.0", "stages.1.0"), "openvino_int8": ("stages.0.0", "stages.1.0"),
          "tflite_int8": ("tf.nn.convolution/convolution", "tf.nn.convolution_1/")}


def test_auto_keeps_the_broken_layer_in_float_on_every_path_and_wins_the_rule_back(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images[:, None].astype(np.float32) / 16.0
    x = (x - x.mean()) / x.std()  # as the data stage normalises digits
    model = with_outlier_channel(_trained(torch.from_numpy(x), torch.from_numpy(d.target.astype(np.int64))), OUTLIER)
    onnx_path = tmp_path / "broken.onnx"
    torch.onnx.export(model.eval(), (torch.zeros(1, 1, 8, 8),), str(onnx_path), dynamo=False)
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(RECIPE.format(runs=tmp_path / "runs"))

    assert main(["export", str(onnx_path), str(recipe)]) == 0
    run = tmp_path / "runs" / "broken-export-broken"
    metrics = json.loads((run / "05_export" / "manifest.json").read_text())["metrics"]
    records = metrics["keep_float"]
    assert set(records) == {"onnx_int8", "tflite_int8", "openvino_int8"}
    for key, record in records.items():
        assert record["mode"] == "auto"
        assert record["plain_val_accuracy"] < MIN_INT8_RETAINED * record["fp32_val_accuracy"], key  # the outlier costs int8
        assert record["val_accuracy"] >= MIN_INT8_RETAINED * record["fp32_val_accuracy"], key  # and auto wins it back
        assert 1 <= len(record["kept"]) <= 4 and any(b in n for b in BROKEN[key] for n in record["kept"]), (key, record["kept"])
    listed = json.loads((run / "05_export" / "artifacts.json").read_text())
    for key in records:
        assert read_sidecar(run / "05_export" / listed[key])["quantization"]["keep_float"]["kept"] == records[key]["kept"]

    report = json.loads((run / "report.json").read_text())
    accuracy = {r["stage"]: r["top1"] for r in report["accuracy"]}
    for key in records:  # judged on test, as shipped
        assert accuracy[key] >= 0.97 * accuracy["onnx"], (key, accuracy)
    for key in ("onnx_int8", "openvino_int8"):  # the where-accuracy-and-time-go table marks the kept layers
        rows = report["where"][key]["rows"]
        assert {r["node"] for r in rows if r["kept_float"]} & set(records[key]["kept"]), key
