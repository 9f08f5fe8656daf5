"""OpenVINO int8 with accuracy control: used only when plain NNCF int8 misses the 99 % rule on validation, and then it holds it.

A TinyNet trained on digits, then given an outlier channel (stage 0's channel 0 ×300 after BN, stage 1's weights for it
÷300: the same function in fp32) whose per-tensor activation range crushes the other channels in int8. Plain NNCF
int8 loses accuracy; the accuracy restorer must win it back by keeping the layer that reads that tensor in float.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TinyNet, with_outlier_channel
from pipeline.artifacts import sha256_file
from pipeline.export.accuracy_control import MAX_DROP, restore_openvino_int8
from pipeline.export.fidelity import MIN_INT8_RETAINED

OUTLIER = 300.0


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return ((d.images / 16.0 - 0.5) / 0.5).astype(np.float32)[:, None], d.target.astype(np.int64)


def _trained(x, y) -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet((8, 16, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        for i in range(0, len(x), 50):
            loss = F.cross_entropy(model(x[i : i + 50]), y[i : i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def irs(tmp_path_factory):
    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.export.torch2onnx import torch2onnx

    x, y = _digits()
    sound = _trained(torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200]))
    broken = with_outlier_channel(sound, OUTLIER)
    made = {}
    for name, model in (("sound", sound), ("broken", broken)):
        folder = tmp_path_factory.mktemp(name)
        onnx = torch2onnx(model, (1, 8, 8), folder / "student.onnx", opset=17)
        made[name] = (onnx, onnx2openvino(onnx, folder, x[:64], fp32=False, int8=True)["openvino_int8"])
    return made, x[:64], (x[1200:1500], y[1200:1500])


def _copy(onnx, xml, folder):
    """A private copy of an IR (the function rewrites it in place)."""
    for src in (xml, xml.with_suffix(".bin")):
        shutil.copyfile(src, folder / src.name)
    return onnx, folder / xml.name


def test_plain_int8_that_misses_the_rule_is_redone_with_accuracy_control(irs, tmp_path):
    made, calibration, validation = irs
    onnx, xml = _copy(*made["broken"], tmp_path)
    before = sha256_file(xml)
    rec = restore_openvino_int8(onnx, xml, calibration, validation, "auto")
    assert rec["used"] and rec["max_drop"] == MAX_DROP == 0.01 and rec["drop_type"] == "relative"
    assert rec["validation_images"] == 300 and "error" not in rec
    assert rec["plain_val_accuracy"] < MIN_INT8_RETAINED * rec["fp32_val_accuracy"]  # the outlier costs plain int8
    assert rec["restored_val_accuracy"] >= MIN_INT8_RETAINED * rec["fp32_val_accuracy"]
    assert "/stages/stages.1/stages.1.0/Conv/WithoutBiases" in rec["float_layers"]  # the layer reading the crushed tensor
    assert len(rec["float_layers"]) < 4  # not everything: the rest stays int8
    assert sha256_file(xml) != before and "kept" in rec["reason"]
    got = rec["decision"]  # the restored IR against plain int8 on the same 300 images: better beyond doubt
    assert got["images"] == 300 and got["split"] == "validation" and got["supported"] is True
    assert got["ci95_pts"][0] > 0 and got["difference_pts"] == pytest.approx(
        100 * (rec["restored_val_accuracy"] - rec["plain_val_accuracy"]), abs=1e-3)
    assert "300 images, fewer than the 500 asked (one image = 0.33 pts)" in got["note"] and "supports it" in rec["reason"]
    lo, hi = got["ci95_pts"]  # and the report shows the record as it is
    assert (f"| OpenVINO accuracy control | accuracy-controlled int8 adopted ({len(rec['float_layers'])} layer(s) in float) "
            f"| {got['difference_pts']:+.2f} pts | [{lo:+.2f}, {hi:+.2f}] pts | 300 validation, one image = 0.33 pts | yes |"
            ) in _report_md(rec)


def _report_md(record: dict) -> str:
    """report.md of a run whose export recorded ``record`` as its accuracy control."""
    from report_fakes import export_metrics, make_results

    from pipeline.report.build import RunRecords, build_report
    from pipeline.report.markdown import render_markdown

    export = {**export_metrics(), "openvino_accuracy_control": record}
    return render_markdown(build_report(make_results(), records=RunRecords(folder="runs/demo", export=export)))


def test_off_and_a_sound_model_keep_the_plain_int8(irs, tmp_path):
    made, calibration, validation = irs
    onnx, xml = _copy(*made["broken"], tmp_path)
    before = sha256_file(xml)
    off = restore_openvino_int8(onnx, xml, calibration, validation, "off")
    assert not off["used"] and "export.openvino_accuracy_control: off" in off["reason"] and sha256_file(xml) == before
    sound = restore_openvino_int8(*made["sound"], calibration, validation, "auto")
    assert not sound["used"] and sound["plain_val_accuracy"] >= MIN_INT8_RETAINED * sound["fp32_val_accuracy"]
    assert "≥ 99%" in sound["reason"] and sound["decision"]["ci95_pts"] is None and sound["decision"]["images"] == 300
