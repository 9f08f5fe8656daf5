"""Dead channels, made harmless before int8 export.

A channel whose input is always zero (a ReLU that never fires, common in MobileNetV2's expanded
layers after short training) leaves its BatchNorm with ``running_var`` ≈ 0. Folding BN into the
conv multiplies that channel's weights by γ/√(var + ε) ≈ 316·γ, so the folded layer holds weights
hundreds of times larger than its live channels. A converter that quantises the layer with one
scale, or calibrates the following activation from it, then rounds every live channel to almost
nothing: measured on a mobile_half student (Fashion-MNIST 16×16), OpenVINO int8 fell from 67 % to
12 % and TFLite int8 to 51 %; with the dead channels neutralised, 66 % and 68 %.

The channel's BN output is a constant, β + γ·(E[conv] − μ)/√(var + ε) = β, since E[conv] = μ when
var ≈ 0. Setting its conv weights (and bias) to 0, μ to 0 and var to 1 keeps exactly that constant
and makes the folded weights 0. The float model's outputs do not change on any input where the
channel is dead; the export stage's fp32 fidelity check against the untouched checkpoint proves it.

A channel can also be *silent* without a zero variance: a depthwise channel whose input is a ReLU that fired on a few
training images only (BN variance 3e-5 on a digits mobile_half, against ~10 for its live channels). Its folded
weights are still ~160× inflated (870 against ≤ 2.6), which crushes every live channel of the layer wherever one
scale, or a floor relative to the largest one, covers them all: NNCF clamps each per-channel range to ≥ 1 % of the
layer's largest (``fix_zero_filters_symmetric``), and that layer alone took OpenVINO int8 from 100 % to 91 % of fp32.
Given the calibration images, a conv output channel that is exactly 0 on every one of them and whose BN inflates it
``INFLATED``× beyond the layer's median has its conv weights zeroed, BN kept: its output is unchanged on every image
where it stays silent (0 in, BN's constant out), and its folded weights are 0. Where it would have fired, the
fp32 fidelity check on the test split says so.
"""

from __future__ import annotations

import torch
from torch import nn

DEAD_VAR = 1e-10  # BN running variance below this: the channel's conv output never varied in training
INFLATED = 30.0  # a silent channel's BN gain (γ/√(var+ε)) this many times the layer's median: zeroed


@torch.no_grad()
def neutralize_dead_channels(model: nn.Module, images=None) -> dict[str, int]:
    """In place: every conv→BN pair's dead channels made exact zeros before BN, and, given ``images`` (normalised
    N×C×H×W calibration images), its silent inflated channels' conv weights zeroed; returns {bn name: count}."""
    from pipeline.models.conv_bn import conv_bn_pairs

    modules = dict(model.named_modules())
    pairs = {bn: conv for bn, conv in conv_bn_pairs(model).items()
             if modules[bn].track_running_stats and modules[bn].running_var is not None}
    dead, suspect = {}, {}  # suspect: inflated by folding; zeroed only where silent on the images
    for bn_name in pairs:
        bn = modules[bn_name]
        dead[bn_name] = bn.running_var < DEAD_VAR
        gain = (bn.weight if bn.affine else torch.ones_like(bn.running_var)).abs() / (bn.running_var + bn.eps).sqrt()
        suspect[bn_name] = (gain > INFLATED * gain.median()) & ~dead[bn_name]
    checked = [modules[pairs[b]] for b in pairs if suspect[b].any()]  # the forward runs only when a layer needs it
    silent = _silent_channels(model, checked, images) if checked and images is not None else {}
    found: dict[str, int] = {}
    for bn_name, conv_name in pairs.items():
        bn, conv, gone = modules[bn_name], modules[conv_name], dead[bn_name]
        inflated = silent.get(id(conv), torch.zeros_like(gone)) & suspect[bn_name]
        if gone.any():
            conv.weight[gone] = 0.0
            if conv.bias is not None:
                conv.bias[gone] = 0.0
            bn.running_mean[gone] = 0.0
            bn.running_var[gone] = 1.0
        if inflated.any():  # BN kept: 0 in still gives its constant out
            conv.weight[inflated] = 0.0
        if gone.any() or inflated.any():
            found[bn_name] = int(gone.sum() + inflated.sum())
    return found


def _silent_channels(model: nn.Module, convs: list[nn.Module], images, batch: int = 64) -> dict[int, torch.Tensor]:
    """id(conv) → which of its output channels are exactly 0 on every image (bias included)."""
    loud: dict[int, torch.Tensor] = {}

    def hook(conv, _inputs, out):
        seen = out.detach().abs().amax(dim=(0, 2, 3)) > 0
        loud[id(conv)] = seen | loud[id(conv)] if id(conv) in loud else seen

    handles = [c.register_forward_hook(hook) for c in convs]
    try:
        x = torch.as_tensor(images, dtype=torch.float32, device=next(model.parameters()).device)
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    finally:
        for h in handles:
            h.remove()
    return {k: ~v for k, v in loud.items()}
