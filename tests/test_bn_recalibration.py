"""BN statistics re-estimated after training: when, on what, and that it restores eval-mode accuracy
of a model whose BN momentum (0.01, torchvision MobileNetV3's) left its statistics behind its weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import build_model
from pipeline.train.bn_recalibration import LOW_MOMENTUM, decide, lowest_momentum, recalibrate, recalibrate_bn


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = ((d.images / 16.0 - 0.3) / 0.4).astype(np.float32)[:, None]
    return x[:1400], d.target[:1400], x[1400:], d.target[1400:]


def test_low_momentum_model_is_far_better_after_recalibration():
    """resnet20 with BN momentum 0.01, two epochs on digits: its running statistics still mostly hold
    the initial (0, 1), so eval mode is poor; re-estimated on the training images, it classifies."""
    xt, yt, xv, yv = _digits()
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.01
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(2):
        order = np.random.default_rng(epoch).permutation(len(xt))
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(torch.from_numpy(xt[idx])), torch.from_numpy(yt[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()

    def accuracy() -> float:
        with torch.no_grad():
            return float((model.eval()(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean())

    record = recalibrate_bn(model, "auto", trained=True, images=xt, batch_size=64, evaluate=accuracy)
    assert record["applied"] and record["reason"] == f"auto: BN momentum 0.01 < {LOW_MOMENTUM}" and record["images"] == 1400
    assert record["val_acc_after"] > 0.8 and record["val_acc_after"] - record["val_acc_before"] > 0.25
    assert not model.training and all(m.momentum == 0.01 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_statistics_are_the_training_images_own():
    """After recalibration a BN layer's running mean/var are its input's mean and (unbiased) variance."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=0.01)
    images = (torch.randn(40, 3, 4, 4) * 2 + 5).numpy()
    recalibrate(nn.Sequential(bn), images, batch_size=40)
    x = torch.from_numpy(images).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(bn.running_mean, x.mean(1), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var(1), rtol=1e-4)


@pytest.mark.parametrize(
    "arch,setting,trained,applied,reason",
    [
        ("torchvision:mobilenet_v3_small", "auto", True, True, "auto: BN momentum 0.01 < 0.1"),
        ("torchvision:mobilenet_v3_small", "auto", False, False, "auto: not trained in this stage"),
        ("torchvision:mobilenet_v3_small", "off", True, False, "recalibrate_bn: off"),
        ("resnet8", "auto", True, False, "auto: BN momentum 0.1 >= 0.1"),
        ("resnet8", "on", False, True, "recalibrate_bn: on"),
    ],
)
def test_when_it_applies(arch, setting, trained, applied, reason):
    model = build_model(arch, 10, 1)
    assert decide(model, setting, trained) == (applied, reason)


def test_models_without_bn_are_left_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert lowest_momentum(model) == 1.0
    assert recalibrate_bn(model, "on", trained=True, images=np.zeros((4, 1, 8, 8), np.float32), batch_size=2) == {
        "applied": False, "reason": "no BatchNorm layers"}
