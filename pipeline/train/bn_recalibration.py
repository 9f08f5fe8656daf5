"""BatchNorm statistics that match the weights: re-estimated on training images after training.

A BN layer's running mean/variance is an exponential moving average of batch statistics. With a
low momentum (0.01 in torchvision's MobileNetV3, TensorFlow's 0.99 decay in ported models) the
average after a short schedule still remembers the first steps' weights, and eval-mode accuracy collapses although the weights are fine (issue 16 measured
14.85 % before and 58.55 % after re-estimation). The fix is the one SWA uses: reset the
statistics and take their cumulative average over training images with the final weights
(``torch.optim.swa_utils.update_bn``; Izmailov et al. 2018, and Nagel et al. 2022 re-estimate
BN after QAT the same way).

``recalibrate_bn`` in the teacher, distill and QAT sections: ``auto`` re-estimates after
training when some BN layer's momentum is below PyTorch's default 0.1 (or None), ``on`` always,
``off`` never. The stage records what was done in its manifest.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

LOW_MOMENTUM = 0.1  # PyTorch's default; an average slower than this lags the weights of a short schedule
MAX_IMAGES = 4096  # the cumulative average settles long before this; bounds the cost on large datasets


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def lowest_momentum(model: nn.Module) -> float | None:
    """The slowest BN average in the model (None: a cumulative average; 1.0 when it has no BN)."""
    momenta = [m.momentum for m in bn_layers(model)]
    if not momenta:
        return 1.0
    return None if any(m is None for m in momenta) else min(momenta)


def decide(model: nn.Module, setting: str, trained: bool) -> tuple[bool, str]:
    """Whether to re-estimate, and why (the manifest records the reason)."""
    if not bn_layers(model):
        return False, "no BatchNorm layers"
    if setting == "off":
        return False, "recalibrate_bn: off"
    if setting == "on":
        return True, "recalibrate_bn: on"
    if not trained:
        return False, "auto: not trained in this stage"
    low = lowest_momentum(model)
    if low is None or low < LOW_MOMENTUM:
        return True, f"auto: BN momentum {low if low is not None else 'None (cumulative)'} < {LOW_MOMENTUM}"
    return False, f"auto: BN momentum {low} >= {LOW_MOMENTUM}"


def recalibrate(model: nn.Module, images: np.ndarray | Dataset, batch_size: int) -> int:
    """Reset and re-estimate every BN layer's statistics on (at most ``MAX_IMAGES`` of) ``images`` (an array,
    or a dataset of (image, label) such as a split that streams from files); returns how many."""
    from torch.optim.swa_utils import update_bn

    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(images[:MAX_IMAGES]))
        update_bn((x[i : i + batch_size] for i in range(0, len(x), batch_size)), model, device=device)
        return int(len(x))
    n = min(len(images), MAX_IMAGES)  # the first images, in order: every rank under torchrun computes the same statistics
    loader = DataLoader(Subset(images, range(n)), batch_size=batch_size, shuffle=False,
                        num_workers=getattr(images, "workers", 0))
    update_bn(loader, model, device=device)  # update_bn takes the image of each (image, label) batch
    return n


def recalibrate_bn(model: nn.Module, setting: str, *, trained: bool, images: np.ndarray | Dataset, batch_size: int,
                   evaluate: Callable[[], float] | None = None) -> dict:
    """``decide``, then ``recalibrate``; the record says what was done, with ``evaluate()`` (validation
    accuracy) before and after when given. The model is left in eval mode."""
    apply, reason = decide(model, setting, trained)
    record: dict = {"applied": apply, "reason": reason}
    if apply:
        model.eval()
        if evaluate is not None:
            record["val_acc_before"] = evaluate()
        record["images"] = recalibrate(model, images, batch_size)
        model.eval()
        if evaluate is not None:
            record["val_acc_after"] = evaluate()
    model.eval()
    return record
