"""A layer's name as a converted file spells it, made short for tables and plots: the exporter's per-layer error
records keep the full name, the report shows this one (a leaf, so the report needs nothing from export)."""

from __future__ import annotations

import re

# name parts that are constants fused into an op's name; onnx2tf numbers them differently in each file
_CONSTANT_PART = re.compile(r"^(Const(_\d+)?|arith\.constant\d*|tfl\.pseudo_qconst\d*)$")


def layer_key(name: str) -> str:
    """A TFLite tensor name without the constants fused into it: the same in a conversion's fp32, calibrated and int8
    files (the per-layer error's and ``export.keep_float``'s name of a layer)."""
    return ";".join(p for p in name.split(";") if not _CONSTANT_PART.match(p))


def short_name(name: str) -> str:
    """'model/tf.nn.relu_5/Relu;model/tf.math.add_10/Add;model/tf.nn.convolution_6/convolution' →
    'convolution_6+add_10+relu_5': the fused ops in execution order, by their numbered scope (for tables and plots).
    An ONNX node path (OpenVINO keeps them), '/layer1/layer1.0/relu/Relu', → its module path 'layer1/layer1.0/relu'."""
    if name.startswith("/"):
        return name.strip("/").rpartition("/")[0] or name.strip("/")
    parts = []
    for part in reversed(name.split(";")):
        scope = part.rsplit("/", 1)[0] if "/" in part else part
        parts.append(scope.removeprefix("model/").split("/")[-1].split(".")[-1])
    return "+".join(parts)
