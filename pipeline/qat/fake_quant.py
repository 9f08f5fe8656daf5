"""Fake-quantised training with torch.ao FX, and the way back to a plain float module.

Why this path (shared/ENVIRONMENT.md): a QDQ (fake-quantised) ONNX fed to onnx2tf gives a
model that runs but answers wrongly. So we train with fake-quant, copy the learned weights
(and BatchNorm statistics) back into the plain float student, export *that*, and let the
converters calibrate int8 ranges on the recorded calibration subset. Conv+BN pairs are fused
during QAT (the folded weight is what gets fake-quantised, as on the device); the copy-back
undoes the fusion by name, so BN folding at export sees the QAT-trained conv and BN.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import fx, nn
from torch.ao.quantization import (
    FakeQuantize,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    QConfig,
    QConfigMapping,
)
from torch.ao.quantization.quantize_fx import prepare_qat_fx

from pipeline.models.conv_bn import conv_bn_pairs
from pipeline.target.rules import TargetRules


def qconfig_for(rules: TargetRules, calibrate: bool = False) -> QConfig:
    """Symmetric int8 weights (per-channel or per-tensor, as the target executes them) and
    asymmetric 8-bit activations over the full range, like TFLite's int8 scheme.

    Training tracks ranges with moving averages; ``calibrate`` uses plain min/max over the data
    seen, as TFLite's and onnx2tf's post-training calibration does."""
    act_observer = MinMaxObserver if calibrate else MovingAverageMinMaxObserver
    activation = FakeQuantize.with_args(
        observer=act_observer, quant_min=0, quant_max=255, dtype=torch.quint8,
        qscheme=torch.per_tensor_affine, reduce_range=False,
    )
    if rules.per_channel:
        weight = FakeQuantize.with_args(
            observer=PerChannelMinMaxObserver if calibrate else MovingAveragePerChannelMinMaxObserver,
            quant_min=-127, quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
        )
    else:
        weight = FakeQuantize.with_args(
            observer=act_observer, quant_min=-127, quant_max=127, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
        )
    return QConfig(activation=activation, weight=weight)


def prepare_qat(model: nn.Module, rules: TargetRules, example: torch.Tensor, calibrate: bool = False) -> fx.GraphModule:
    """An FX graph of ``model`` with conv-BN(-ReLU) fused and fake-quant inserted (training mode)."""
    float_copy = copy.deepcopy(model).train()
    mapping = QConfigMapping().set_global(qconfig_for(rules, calibrate))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao FX notices; this path is the one measured to work
        return prepare_qat_fx(float_copy, mapping, example_inputs=(example,))


@torch.no_grad()
def copy_back(qat_model: fx.GraphModule, float_model: nn.Module) -> nn.Module:
    """Load the QAT-trained weights and BN statistics into the plain float module (same architecture)."""
    qat_state = qat_model.state_dict()
    bn_to_conv = conv_bn_pairs(float_model)
    new_state = {}
    for key, value in float_model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        candidates = [key]
        if module in bn_to_conv:
            candidates.append(f"{bn_to_conv[module]}.bn.{leaf}")
        candidates.append(f"{module}.0.{leaf}")  # a BN fused with its ReLU alone (pre-activation WRN, DenseNet)
        found = next((c for c in candidates if c in qat_state), None)
        if found is None:
            raise KeyError(f"QAT model has no weights for {key} (tried {candidates})")
        new_state[key] = qat_state[found].clone()
    float_model.load_state_dict(new_state)
    return float_model


def freeze_bn_stats(qat_model: nn.Module) -> None:
    qat_model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)


def freeze_observers(qat_model: nn.Module) -> None:
    qat_model.apply(torch.ao.quantization.disable_observer)


@torch.no_grad()
def post_training_quantized(model: nn.Module, rules: TargetRules, calibration: torch.Tensor, batch_size: int = 64) -> fx.GraphModule:
    """``model`` as the export path will quantise it (eval mode): BN folded with its running statistics,
    the target's weight scheme, activation ranges = min/max over the calibration images. What the
    converters do to the float weights, simulated in PyTorch so the QAT guard can compare weight sets."""
    param = next(model.parameters(), None)
    calibration = calibration.to(param.device) if param is not None else calibration
    q = prepare_qat(model, rules, calibration[:2], calibrate=True).eval()  # eval: fused BN uses running stats
    q.apply(torch.ao.quantization.disable_fake_quant)
    for i in range(0, len(calibration), batch_size):
        q(calibration[i : i + batch_size])  # observers see float activations, as a calibrator does
    q.apply(torch.ao.quantization.disable_observer)
    q.apply(torch.ao.quantization.enable_fake_quant)
    return q
