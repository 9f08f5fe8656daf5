"""The Edge TPU's supported operations and each one's documented limits, as code.

Source: Coral, "TensorFlow models on the Edge TPU" (coral.ai/docs/edgetpu/models-intro,
section "Supported operations"), the table for Edge TPU Compiler 16 (also published for the
same silicon as Axis ARTPEC-7's DLPU table). Limit texts are paraphrased; each check below
implements one documented limit and returns the reason it is violated, or None.

What the table cannot say (the compiler decides): an op that meets every limit may still stay
on the CPU "due to some unspecified limitation" (large reshapes, some resize sizes). The real
compiler's log, when it is installed, is recorded beside this static check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.formats.tflite_graph import TFLiteTensor
from pipeline.target.tflite_options import OpView

EIGHT_BIT = ("int8", "uint8")
ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


@dataclass(frozen=True)
class OpSupport:
    name: str  # Coral's name for the op
    limits: str = ""  # the documented limitation, paraphrased
    checks: tuple[Callable[[OpView], str | None], ...] = ()


def effectively_rank(shape: tuple[int, ...]) -> int:
    """Rank once leading 1s are dropped: [1, 1, 10] is 1-D, [1, 4, 4, 8] is 3-D."""
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return len(dims)


def rank_problem(t: TFLiteTensor) -> str | None:
    """Coral: tensors are 1-, 2- or 3-D; with more dims only the 3 innermost may exceed 1 (so batch is 1)."""
    if len(t.shape) > 3 and any(d != 1 for d in t.shape[:-3]):
        return f"tensor '{t.name}' {list(t.shape)}: only the 3 innermost dimensions may exceed 1"
    return None


def _axes(values: np.ndarray | None, rank: int) -> list[int] | None:
    if values is None:
        return None
    return sorted({int(a) % rank for a in np.ravel(values)}) if rank else []


def no_fused_activation(v: OpView) -> str | None:
    act = ACTIVATIONS.get(int(v.options.get("fusedActivationFunction", 0) or 0), "unknown")
    return f"fused activation {act}: not allowed on this op" if act else None


def same_dilation(v: OpView) -> str | None:
    h, w = v.options.get("dilationHFactor", 1), v.options.get("dilationWFactor", 1)
    return f"dilation {h}x{w}: must be the same in x and y" if h != w else None


def concat_constant_inputs(v: OpView) -> str | None:
    consts = [i for i, t in enumerate(v.op.inputs) if t.is_constant]
    if not consts:
        return None
    if len(v.op.inputs) != 2:
        return f"{len(v.op.inputs)} inputs with a constant one: only 2 inputs allowed when one is constant"
    value = v.const(consts[0])
    if value is None or np.any(value != (v.op.inputs[consts[0]].zero_point or [0])[0]):
        return "constant input is not all zeros (only a zero-padding concatenation is allowed)"
    return None


def fully_connected_limits(v: OpView) -> str | None:
    if int(v.options.get("weightsFormat", 0) or 0) != 0:
        return "weights not in the default format (shuffled FC weights are not supported)"
    out = v.op.outputs[0].shape if v.op.outputs else ()
    if effectively_rank(out) > 1:
        return f"output {list(out)} is not one-dimensional"
    return None


def reduce_not_on_batch(position: int) -> Callable[[OpView], str | None]:
    """Reductions (Mean, Sum, ReduceMax/Min): never along the batch dimension (axis 0 of a 4-D NHWC tensor)."""

    def check(v: OpView) -> str | None:
        shape = v.op.inputs[0].shape
        axes = _axes(v.const(position), len(shape))
        if axes is None:
            return "reduction axes are not a compile-time constant"
        if len(shape) == 4 and 0 in axes:
            return f"reduces axes {axes}: not along the batch dimension"
        return None

    return check


def mean_depth_multiple_of_4(v: OpView) -> str | None:
    shape = v.op.inputs[0].shape
    axes = _axes(v.const(1), len(shape)) or []
    if shape and (len(shape) - 1) in axes and shape[-1] % 4:
        return f"reduces the z (channel) dimension of size {shape[-1]}: must be a multiple of 4"
    return None


def pad_not_on_batch(v: OpView) -> str | None:
    pads = v.const(1)
    if pads is None:
        return "paddings are not a compile-time constant"
    if len(v.op.inputs[0].shape) == 4 and np.any(np.asarray(pads)[0] != 0):
        return f"pads the batch dimension ({np.asarray(pads)[0].tolist()})"
    return None


def pack_not_on_batch(v: OpView) -> str | None:
    rank = len(v.op.outputs[0].shape)
    axis = int(v.options.get("axis", 0) or 0)
    return f"packs along axis {axis}: not along the batch dimension" if rank >= 4 and axis % rank == 0 else None


def split_not_on_batch(v: OpView) -> str | None:
    value = v.const(0)  # SPLIT(axis, input)
    if value is None:
        return "split axis is not a compile-time constant"
    rank, axis = len(v.op.inputs[-1].shape), int(np.ravel(value)[0])
    return f"splits along axis {axis}: not along the batch dimension" if rank >= 4 and axis % rank == 0 else None


def softmax_limits(v: OpView) -> str | None:
    shape = v.op.inputs[0].shape
    if effectively_rank(shape) > 1:
        return f"input {list(shape)} is not 1-D"
    if int(np.prod(shape)) > 16000:
        return f"{int(np.prod(shape))} elements (at most 16,000)"
    return None


def strided_slice_limits(v: OpView) -> str | None:
    strides = v.const(3)
    if strides is None or np.any(np.asarray(strides) != 1):
        return f"strides {None if strides is None else np.asarray(strides).tolist()}: all strides must be 1"
    if v.options.get("ellipsisMask", 0) or v.options.get("newAxisMask", 0):
        return "ellipsis_mask and new_axis_mask must be 0"
    return None


def prelu_alpha(v: OpView) -> str | None:
    if len(v.op.inputs) < 2 or not v.op.inputs[1].is_constant:
        return "alpha is not a compile-time constant"
    if effectively_rank(v.op.inputs[1].shape) > 1:
        return f"alpha {list(v.op.inputs[1].shape)}: only its innermost dimension may exceed 1"
    return None


def resize_3d(v: OpView) -> str | None:
    for t in (v.op.inputs[0], *v.op.outputs):
        if effectively_rank(t.shape) > 3:
            return f"tensor '{t.name}' {list(t.shape)} is not 3-D"
    return None


_RESIZE = "input/output 3-D; some sizes stay on the CPU to avoid a loss of precision"

# TFLite builtin name -> what Coral documents for it. Absent = "Operation not supported".
SUPPORTED_OPS: dict[str, OpSupport] = {
    "ADD": OpSupport("Add"),
    "AVERAGE_POOL_2D": OpSupport("AveragePool2d", "no fused activation", (no_fused_activation,)),
    "CONCATENATION": OpSupport("Concatenation", "no fused activation; a constant input only as a 2-input all-zero padding",
                               (no_fused_activation, concat_constant_inputs)),
    "CONV_2D": OpSupport("Conv2d", "same dilation in x and y", (same_dilation,)),
    "DEPTHWISE_CONV_2D": OpSupport("DepthwiseConv2d", "same dilation in x and y", (same_dilation,)),
    "EXPAND_DIMS": OpSupport("ExpandDims"),
    "FULLY_CONNECTED": OpSupport("FullyConnected", "default weights format; 1-D output", (fully_connected_limits,)),
    "L2_NORMALIZATION": OpSupport("L2Normalization"),
    "LOGISTIC": OpSupport("Logistic"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": OpSupport("LSTM", "unidirectional only"),
    "MAXIMUM": OpSupport("Maximum"),
    "MAX_POOL_2D": OpSupport("MaxPool2d", "no fused activation", (no_fused_activation,)),
    "MEAN": OpSupport("Mean", "not over the batch dimension; a z-reduction needs depth % 4 == 0",
                      (reduce_not_on_batch(1), mean_depth_multiple_of_4)),
    "MINIMUM": OpSupport("Minimum"),
    "MUL": OpSupport("Mul"),
    "PACK": OpSupport("Pack", "not along the batch dimension", (pack_not_on_batch,)),
    "PAD": OpSupport("Pad", "not along the batch dimension", (pad_not_on_batch,)),
    "PRELU": OpSupport("PReLU", "alpha constant, only its innermost dimension > 1", (prelu_alpha,)),
    "QUANTIZE": OpSupport("Quantize"),
    "REDUCE_MAX": OpSupport("ReduceMax", "not along the batch dimension", (reduce_not_on_batch(1),)),
    "REDUCE_MIN": OpSupport("ReduceMin", "not along the batch dimension", (reduce_not_on_batch(1),)),
    "RELU": OpSupport("ReLU"),
    "RELU6": OpSupport("ReLU6"),
    "RELU_N1_TO_1": OpSupport("ReLUN1To1"),
    "RESHAPE": OpSupport("Reshape", "some reshapes of large tensors are not mapped"),
    "RESIZE_BILINEAR": OpSupport("ResizeBilinear", _RESIZE, (resize_3d,)),
    "RESIZE_NEAREST_NEIGHBOR": OpSupport("ResizeNearestNeighbor", _RESIZE, (resize_3d,)),
    "RSQRT": OpSupport("Rsqrt"),
    "SLICE": OpSupport("Slice"),
    "SOFTMAX": OpSupport("Softmax", "1-D input of at most 16,000 elements", (softmax_limits,)),
    "SPACE_TO_DEPTH": OpSupport("SpaceToDepth"),
    "SPLIT": OpSupport("Split", "not along the batch dimension", (split_not_on_batch,)),
    "SQUARED_DIFFERENCE": OpSupport("SquaredDifference"),
    "SQUEEZE": OpSupport("Squeeze"),
    "STRIDED_SLICE": OpSupport("StridedSlice", "all strides 1, ellipsis_mask and new_axis_mask 0", (strided_slice_limits,)),
    "SUB": OpSupport("Sub"),
    "SUM": OpSupport("Sum", "not along the batch dimension", (reduce_not_on_batch(1),)),
    "TANH": OpSupport("Tanh"),
    "TRANSPOSE": OpSupport("Transpose"),
    "TRANSPOSE_CONV": OpSupport("TransposeConv"),
}

# Ops outside the table that common architectures bring, with what users of the real compiler report
# and do instead; the refusal carries it, so the user learns the fix with the op's name.
UNMAPPED_ADVICE: dict[str, str] = {
    "HARD_SWISH": "MobileNetV3's hard-swish, which the compiler leaves on the CPU (google-coral/edgetpu#272, #353); "
                  "the *_minimal variants replace it with ReLU",
    "RELU_0_TO_1": "hard-sigmoid (MobileNetV3's squeeze-excite gate) as TFLite >= 2.13 writes it, newer than Edge TPU "
                   "Compiler 16; the *_minimal variants have no squeeze-excite",
    "LEAKY_RELU": "not mapped (google-coral/edgetpu#165, #272); use ReLU",
    "GELU": "not mapped; use ReLU (or ReLU6)",
}

# The compiler's own status strings (its operation log), reused so the two tables read alike.
MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
LIMIT = "Operation is otherwise supported, but not mapped due to a documented limitation"
AFTER_CUT = "More than one subgraph is not supported"


def op_problem(v: OpView) -> tuple[str, str] | None:
    """(status, reason) when this op alone cannot map to the Edge TPU; None when it can."""
    op = v.op
    if op.is_custom:
        kind = "Flex (TensorFlow) op" if op.is_flex else "custom op"
        return NOT_SUPPORTED, f"{op.opcode_name}: {kind}"
    spec = SUPPORTED_OPS.get(op.opcode_name)
    if spec is None:
        advice = UNMAPPED_ADVICE.get(op.opcode_name)
        return NOT_SUPPORTED, f"{op.opcode_name} is not in the Edge TPU's supported operations" + (f" ({advice})" if advice else "")
    for t in (*op.inputs, *op.outputs):
        if t.is_constant:
            if t.is_float:
                return UNSUPPORTED_TYPE, f"constant '{t.name}' is {t.dtype} (parameters must be 8-bit, biases int32)"
            continue
        if t.dtype not in EIGHT_BIT:
            return UNSUPPORTED_TYPE, f"tensor '{t.name}' is {t.dtype}, not 8-bit quantised"
    for t in (*op.inputs, *op.outputs):
        if not t.is_constant and (reason := rank_problem(t)):
            return UNSUPPORTED_RANK, reason
    for check in spec.checks:
        if reason := check(v):
            return LIMIT, f"{spec.name}: {reason}"
    return None
