"""Per-layer int8 error: the arithmetic by hand, a sound TinyNet, and one whose quantisation is broken on purpose.

The broken model computes the same function in fp32 (one channel of stage 0 scaled up ×300 after
BN, stage 1's weights for it scaled down), but its stage-0 activation range is set by that one
channel, so per-tensor int8 rounds the other channels of that tensor to a few levels: the error
shows where stage 1 adds them back, and that layer must come out worst.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import TinyNet, with_outlier_channel
from pipeline.export.layer_error import LayerError, compare_tensors, cosine, layer_errors, sqnr_db, summary, worst_first
from pipeline.formats.layer_names import short_name

OUTLIER = 300.0


def test_numbers_of_a_hand_made_pair():
    ref, got = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0])
    # Σ ref² = 30, Σ (ref − got)² = 1, ref·got = 34, Σ got² = 39
    assert sqnr_db(ref, got) == pytest.approx(10 * math.log10(30))
    assert cosine(ref, got) == pytest.approx(34 / math.sqrt(30 * 39))
    row = compare_tensors({"a": (ref, got)})["a"]
    assert row == pytest.approx({"sqnr_db": 10 * math.log10(30), "rel_error": math.sqrt(1 / 30), "cosine": 34 / math.sqrt(30 * 39)})
    assert sqnr_db(ref, ref) == math.inf and compare_tensors({"z": (np.zeros(3), np.ones(3))})["z"]["sqnr_db"] is None


def test_a_corrupted_array_is_the_worst():
    rng = np.random.default_rng(0)
    pairs = {}
    for name in ("a", "b", "c", "d"):
        ref = rng.standard_normal(1000)
        pairs[name] = (ref, np.round(ref * 64) / 64)  # ≈ 8-bit rounding of a ±4 signal
    ref = pairs["c"][0]
    pairs["c"] = (ref, ref + 0.3 * rng.standard_normal(1000))
    rows = compare_tensors(pairs)
    records = [LayerError(name=n, op="CONV_2D", shape=[1000], index=i, **rows[n], clipped=0.0, scale=1 / 64, zero_point=0)
               for i, n in enumerate(pairs)]
    ranked = worst_first(records)
    assert ranked[0].name == "c" and ranked[0].sqnr_db == pytest.approx(10 * math.log10(1 / 0.09), abs=0.5)
    assert all(r.sqnr_db > 40 for r in ranked[1:])


def test_short_name_lists_fused_ops_in_execution_order():
    name = "model/tf.nn.relu_5/Relu;model/tf.math.add_10/Add;model/tf.nn.convolution_6/convolution"
    assert short_name(name) == "convolution_6+add_10+relu_5"


def _digits(n: int = 32) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images[:n]
    return ((images / 16.0 - 0.5) / 0.5).astype(np.float32)[:, None]


def _export(model, folder, images):
    from pipeline.export.onnx2tflite import onnx2tflite
    from pipeline.export.torch2onnx import torch2onnx

    onnx = torch2onnx(model.eval(), (1, 8, 8), folder / "student.onnx", opset=17)
    return onnx2tflite(onnx, folder, images, "uint8", per_channel=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    images = _digits()
    torch.manual_seed(0)
    sound = TinyNet((4, 8, 16)).eval()
    broken = with_outlier_channel(sound, OUTLIER)
    with torch.no_grad():
        x = torch.from_numpy(images)
        assert torch.allclose(broken(x), sound(x), atol=1e-5)  # the same function in fp32
    return {name: _export(model, tmp_path_factory.mktemp(name), images) for name, model in
            (("sound", sound), ("broken", broken))}, images


def test_every_layer_of_a_sound_model_is_above_30_db(exported):
    made, images = exported
    layers = layer_errors(made["sound"]["tflite_int8"], made["sound"]["tflite_fp32"], images)
    ops = {r.op for r in layers}
    assert {"CONV_2D", "input"} <= ops and any(r.op.startswith("FULLY_CONNECTED") for r in layers)  # input to logits
    assert sum(r.op == "CONV_2D" for r in layers) == 3
    for r in layers:
        assert r.sqnr_db > 30, r
        assert r.cosine > 0.999 and r.rel_error == pytest.approx(10 ** (-r.sqnr_db / 20))
        assert r.shape[0] == 1 and r.scale > 0
    assert [r.sqnr_db for r in layers] == sorted(r.sqnr_db for r in layers)
    doc = summary(layers, images=len(images))
    json.dumps(doc, allow_nan=False)
    assert doc["worst"]["name"] == layers[0].name and len(doc["records"]) == doc["layers"] == len(layers)


def test_a_broken_layer_comes_out_worst(exported):
    made, images = exported
    sound = {r.name: r for r in layer_errors(made["sound"]["tflite_int8"], made["sound"]["tflite_fp32"], images)}
    broken = layer_errors(made["broken"]["tflite_int8"], made["broken"]["tflite_fp32"], images)
    worst = broken[0]
    assert worst.op == "CONV_2D" and "convolution_1" in short_name(worst.name)  # stage 1, where the crushed channels are summed
    assert worst.sqnr_db < 10 < sound[worst.name].sqnr_db - 20
    stage0 = next(r for r in broken if short_name(r.name).startswith("convolution+"))
    assert stage0.sqnr_db > 30  # the outlier's own tensor looks fine: its energy is the big channel


def test_images_beyond_max_are_not_used(exported):
    made, images = exported
    few = layer_errors(made["sound"]["tflite_int8"], made["sound"]["tflite_fp32"], images, max_images=4)
    same = layer_errors(made["sound"]["tflite_int8"], made["sound"]["tflite_fp32"], images[:4])
    assert [(r.name, r.sqnr_db) for r in few] == [(r.name, r.sqnr_db) for r in same]


def test_a_comparison_that_dies_costs_only_the_diagnosis(exported, tmp_path):
    """The interpreters run in a child process: a file LiteRT cannot read (or a crash) is one recorded line."""
    from pipeline.export.layer_error import write_layer_error

    made, images = exported
    broken = tmp_path / "broken_int8.tflite"
    broken.write_bytes(b"not a flatbuffer")
    record = write_layer_error(broken, made["sound"]["tflite_fp32"], images, tmp_path)
    assert record["error"].startswith("PipelineError: layer error: the comparison process failed (")
    assert "\n" not in record["error"] and not (tmp_path / "layer_error.json").exists()
