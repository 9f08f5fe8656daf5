"""Conv-BatchNorm pairs as torch.ao's FX fusion pairs them, and folding them for a frozen model.

QAT fuses by these pairs and copies the trained weights back by them, the frozen teacher is made
cheaper by folding them, and the export's dead-channel check reads them: one pairing for all three.
"""

from __future__ import annotations

from torch import fx, nn


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """BatchNorm module name -> the conv it follows, as FX fusion will pair them."""
    traced = fx.symbolic_trace(model)
    modules = dict(model.named_modules())
    pairs = {}
    for node in traced.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.BatchNorm2d):
            src = node.args[0]
            if isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1:
                pairs[node.target] = src.target
    return pairs


def fold_batchnorm(model: nn.Module) -> int:
    """In place, for a frozen model in eval mode: fold each BatchNorm into the conv it follows
    (torch.nn.utils.fusion.fuse_conv_bn_eval) and replace the BN by Identity, keeping module
    names, so feature taps on stage modules see the same tensors. Returns the number folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    modules = dict(model.named_modules())
    pairs = conv_bn_pairs(model)
    for bn, conv in pairs.items():
        _replace(model, conv, fuse_conv_bn_eval(modules[conv], modules[bn]))
        _replace(model, bn, nn.Identity())
    return len(pairs)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)
