"""Per-op builtin options and small integer constants of a .tflite, which ``tflite_graph`` leaves out.

An accelerator's per-op limits depend on them: fused activations of pools, conv dilation,
reduction axes, paddings, strided-slice strides. Read with the same schema bindings as
``pipeline.formats.tflite_graph`` (ai_edge_litert, or TensorFlow's copy), no interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.formats.tflite_graph import TFLiteGraph, TFLiteOp, _schema

MAX_CONSTANT_ELEMENTS = 1 << 16  # axes, paddings, strides, zero-pads; weights of big layers are not needed
_NUMPY = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32, "int64": np.int64}


@dataclass(frozen=True)
class OpView:
    """One op with what its limits are judged on: options from the flatbuffer, small constant inputs."""

    op: TFLiteOp
    options: dict = field(default_factory=dict)  # builtin options (camelCase keys, as the schema names them)
    constants: dict[int, np.ndarray] = field(default_factory=dict)  # tensor index -> value (int constants only)

    def const(self, position: int) -> np.ndarray | None:
        if position >= len(self.op.inputs):
            return None
        return self.constants.get(self.op.inputs[position].index)


def read_op_views(graph: TFLiteGraph) -> list[OpView]:
    """One ``OpView`` per op of ``graph`` (same order): its options as a dict and its small integer constants."""
    schema = _schema()
    buf = graph.path.read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    sg = model.Subgraphs(0)
    views = []
    for op in graph.ops:
        raw = sg.Operators(op.index)
        options = schema.BuiltinOptionsCreator(raw.BuiltinOptionsType(), raw.BuiltinOptions())
        constants = {}
        for t in op.inputs:
            dtype = _NUMPY.get(t.dtype)
            if not t.is_constant or dtype is None or int(np.prod(t.shape or (1,))) > MAX_CONSTANT_ELEMENTS:
                continue
            data = model.Buffers(sg.Tensors(t.index).Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray) and data.size:
                constants[t.index] = np.frombuffer(data.tobytes(), dtype=dtype).reshape(t.shape or ())
        views.append(OpView(op=op, options=dict(vars(options)) if options is not None else {}, constants=constants))
    return views
