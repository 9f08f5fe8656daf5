"""Read a .tflite file's graph (ops, tensors, quantisation) without running it, and judge it as full-integer.

The Edge TPU compiler maps only a fully int8 graph ("Model not quantized" otherwise), and
onnx2tf can silently skip int8 and still exit 0, so every int8 artifact is checked here from
its own flatbuffer. Parsing uses the schema bindings shipped with ``ai_edge_litert`` (or
TensorFlow's copy): no interpreter, no torch, so the target checker and boards can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

FLOAT_DTYPES = ("float32", "float16", "float64", "bfloat16")
INTEGER_DTYPES = ("int8", "uint8", "int16", "int32", "int64")
_ITEMSIZE = {
    "float32": 4, "float16": 2, "float64": 8, "bfloat16": 2, "int32": 4, "uint32": 4, "uint8": 1, "int8": 1,
    "int16": 2, "uint16": 2, "int64": 8, "uint64": 8, "bool": 1, "complex64": 8, "complex128": 16, "int4": 1,
}


@dataclass(frozen=True)
class TFLiteTensor:
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str  # "int8", "uint8", "int32", "float32", ...
    scale: list[float] = field(default_factory=list)  # one per tensor, or one per channel
    zero_point: list[int] = field(default_factory=list)
    is_constant: bool = False  # weights/biases stored in the file
    nbytes: int = 0  # elements × itemsize
    index: int = -1  # position in the subgraph's tensor table
    quantized_dimension: int = 0  # the channel axis of per-channel scales

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_quantized(self) -> bool:
        return bool(self.scale)


@dataclass(frozen=True)
class TFLiteOp:
    index: int
    opcode_name: str  # builtin name ("CONV_2D"), or the custom code ("FlexConv2D", "TFLite_Detection_PostProcess")
    inputs: list[TFLiteTensor]  # absent optional inputs are left out
    outputs: list[TFLiteTensor]
    is_custom: bool = False

    @property
    def is_flex(self) -> bool:
        return self.is_custom and self.opcode_name.startswith("Flex")


@dataclass(frozen=True)
class TFLiteGraph:
    path: Path
    ops: list[TFLiteOp]  # main subgraph, in execution order
    inputs: list[TFLiteTensor]
    outputs: list[TFLiteTensor]
    tensors: list[TFLiteTensor]
    num_subgraphs: int = 1

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.opcode_name] = counts.get(op.opcode_name, 0) + 1
        return counts


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError:
            raise PipelineError("reading .tflite needs ai-edge-litert (pip install ai-edge-litert) or tensorflow") from None
    return schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def read_tflite(path: Path) -> TFLiteGraph:
    """Parse the main subgraph of a .tflite flatbuffer into ops and tensors (shapes, dtypes, quantisation)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such .tflite file")
    schema = _schema()
    buf = path.read_bytes()
    try:
        model = schema.Model.GetRootAs(buf, 0)
        n_subgraphs = model.SubgraphsLength()
    except Exception as exc:
        raise PipelineError(f"{path}: not a TFLite flatbuffer ({type(exc).__name__})") from None
    if n_subgraphs < 1 or buf[4:8] != b"TFL3":
        raise PipelineError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    type_names = {k: v.lower() for k, v in _enum_names(schema.TensorType).items()}
    op_names = _enum_names(schema.BuiltinOperator)

    opcodes: list[tuple[str, bool]] = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # schema v3a keeps small codes in the old field
        name = op_names.get(code, f"OP_{code}")
        if name == "CUSTOM":
            custom = oc.CustomCode()
            opcodes.append(((custom.decode() if custom else "CUSTOM"), True))
        else:
            opcodes.append((name, False))

    def buffer_has_data(idx: int) -> bool:
        if idx <= 0 or idx >= model.BuffersLength():
            return False
        b = model.Buffers(idx)
        return b.DataLength() > 0 or b.Size() > 0  # Size/Offset: data stored after the flatbuffer (>2 GB models)

    sg = model.Subgraphs(0)
    tensors: list[TFLiteTensor] = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        dtype = type_names.get(t.Type(), f"type{t.Type()}")
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        signature = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        q = t.Quantization()
        scale: list[float] = []
        zero_point: list[int] = []
        qdim = 0
        if q is not None and q.ScaleLength():
            scale = [float(s) for s in q.ScaleAsNumpy()]
            zero_point = [int(z) for z in q.ZeroPointAsNumpy()] if q.ZeroPointLength() else [0] * len(scale)
            qdim = int(q.QuantizedDimension())
        tensors.append(TFLiteTensor(
            index=i,
            name=(t.Name() or b"").decode(errors="replace"),
            shape=shape,
            shape_signature=signature,
            dtype=dtype,
            scale=scale,
            zero_point=zero_point,
            quantized_dimension=qdim,
            is_constant=buffer_has_data(t.Buffer()),
            nbytes=int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE.get(dtype, 1) if shape else _ITEMSIZE.get(dtype, 1),
        ))

    def pick(indices) -> list[TFLiteTensor]:
        return [tensors[int(j)] for j in indices if int(j) >= 0]

    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        name, custom = opcodes[op.OpcodeIndex()]
        ins = op.InputsAsNumpy() if op.InputsLength() else []
        outs = op.OutputsAsNumpy() if op.OutputsLength() else []
        ops.append(TFLiteOp(index=i, opcode_name=name, inputs=pick(ins), outputs=pick(outs), is_custom=custom))
    graph_in = pick(sg.InputsAsNumpy()) if sg.InputsLength() else []
    graph_out = pick(sg.OutputsAsNumpy()) if sg.OutputsLength() else []
    return TFLiteGraph(path=path, ops=ops, inputs=graph_in, outputs=graph_out, tensors=tensors, num_subgraphs=n_subgraphs)


def _is_boundary_conversion(op: TFLiteOp, graph: TFLiteGraph) -> bool:
    """QUANTIZE right after a float graph input / DEQUANTIZE right before a float graph output."""
    io_in = {id(t) for t in graph.inputs}  # read_tflite hands out one object per tensor
    io_out = {id(t) for t in graph.outputs}
    if op.opcode_name == "QUANTIZE":
        return all(id(t) in io_in for t in op.inputs)
    if op.opcode_name == "DEQUANTIZE":
        return all(id(t) in io_out for t in op.outputs) and not any(t.is_constant for t in op.inputs)
    return False


def float_ops_between_io(graph: TFLiteGraph, float_layers=()) -> list[str]:
    """Ops that compute in float between input and output: what the Edge TPU compiler rejects ("Model not quantized").

    An op counts when any tensor it reads at run time or writes is float (float32/float16),
    or it is a DEQUANTIZE (fp16-weight models dequantise constants). Only a QUANTIZE fed by
    a graph input or a DEQUANTIZE writing a graph output is excused: those are the I/O
    conversions of an int8 model with float I/O, which the compiler leaves on the CPU.
    ``float_layers``: layers kept in float on purpose (``export.keep_float``, names as ``layer_key`` spells them):
    their ops, the DEQUANTIZE ops that feed only them and the QUANTIZE ops that read them are excused too.
    Returns one line per op, e.g. ``"#3 CONV_2D (float32 output 'conv1')"``.
    """
    excused = _kept_float_ops(graph, float_layers)
    found = []
    for op in graph.ops:
        if _is_boundary_conversion(op, graph) or op.index in excused:
            continue
        culprit = next((("input", t) for t in op.inputs if t.is_float and not t.is_constant), None) or next(
            (("output", t) for t in op.outputs if t.is_float), None
        )
        if culprit is None and op.opcode_name == "DEQUANTIZE":
            culprit = ("input", op.inputs[0]) if op.inputs else None
        if culprit is not None:
            kind, t = culprit
            found.append(f"#{op.index} {op.opcode_name} ({t.dtype} {kind} '{t.name}')")
    return found


def _kept_float_ops(graph: TFLiteGraph, float_layers) -> set[int]:
    """Indices of the ops a kept-float layer brings: its own (every output float and named by ``float_layers``), the
    DEQUANTIZE of an activation read only by those, the QUANTIZE of one of their outputs."""
    from pipeline.formats.layer_names import layer_key

    wanted = {layer_key(n) for n in float_layers}
    if not wanted:
        return set()
    readers: dict[int, set[int]] = {}
    for op in graph.ops:
        for t in op.inputs:
            readers.setdefault(t.index, set()).add(op.index)
    ops = {op.index: op for op in graph.ops}

    def named(t: TFLiteTensor) -> bool:  # a graph output's name goes to the QUANTIZE after the float op
        return layer_key(t.name) in wanted or bool(readers.get(t.index)) and all(
            ops[r].opcode_name == "QUANTIZE" and layer_key(ops[r].outputs[0].name) in wanted for r in readers[t.index])

    kept = {op.index for op in graph.ops if op.outputs and op.opcode_name not in ("QUANTIZE", "DEQUANTIZE")
            and all(t.is_float and named(t) for t in op.outputs)}
    kept_outputs = {t.index for op in graph.ops if op.index in kept for t in op.outputs}
    bridges = set()
    for op in graph.ops:
        if op.opcode_name == "DEQUANTIZE" and op.inputs and not op.inputs[0].is_constant:
            if all(r in kept for t in op.outputs for r in readers.get(t.index, {None})):
                bridges.add(op.index)
        elif op.opcode_name == "QUANTIZE" and op.inputs and op.inputs[0].index in kept_outputs:
            bridges.add(op.index)
    return kept | bridges


def full_integer_problems(graph: TFLiteGraph, io_dtype: str | None = None, float_layers=()) -> list[str]:
    """Why a model is not a full-integer int8 model with ``io_dtype`` I/O; empty when it is.

    Checks: input/output dtype (when given), no float compute, no DEQUANTIZE anywhere and no
    QUANTIZE from float in the middle (an int→int QUANTIZE is a requantisation, integer
    arithmetic, allowed), no Flex or other custom ops, every int8 activation quantised.
    ``float_layers``: the layers ``export.keep_float`` kept in float (recorded in the sidecar), allowed with the
    DEQUANTIZE/QUANTIZE around them; any other float op is still a problem.
    """
    problems = []
    if io_dtype is not None:
        for kind, tensors in (("input", graph.inputs), ("output", graph.outputs)):
            for t in tensors:
                if t.dtype != io_dtype:
                    problems.append(f"{kind} '{t.name}' is {t.dtype}, expected {io_dtype}")
    excused = _kept_float_ops(graph, float_layers)
    problems += [f"float op {line}" for line in float_ops_between_io(graph, float_layers)]
    for op in graph.ops:
        if op.is_custom:
            problems.append(f"#{op.index} {op.opcode_name}: {'Flex (TensorFlow) op' if op.is_flex else 'custom op'}")
        if op.opcode_name in ("QUANTIZE", "DEQUANTIZE") and not _is_boundary_conversion(op, graph) and op.index not in excused:
            if op.opcode_name == "DEQUANTIZE" or any(t.is_float for t in op.inputs):
                line = f"#{op.index} {op.opcode_name} in the middle of the graph"
                if not any(line in p for p in problems):
                    problems.append(line)
        for t in op.outputs:
            if t.dtype in ("int8", "uint8") and not t.is_quantized:
                problems.append(f"#{op.index} {op.opcode_name}: output '{t.name}' is {t.dtype} without quantisation parameters")
    if graph.num_subgraphs > 1:
        problems.append(f"{graph.num_subgraphs} subgraphs (control flow); expected one")
    return problems


def describe(graph: TFLiteGraph) -> list[dict]:
    """One JSON-able row per op (name, input/output dtypes and shapes), for reports."""
    return [
        {
            "index": op.index,
            "op": op.opcode_name,
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "constant": t.is_constant} for t in op.inputs],
            "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in op.outputs],
        }
        for op in graph.ops
    ]
