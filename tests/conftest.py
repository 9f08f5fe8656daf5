"""Tiny teacher/student models and a tiny run recipe, so every test runs on CPU in seconds."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv-BN-ReLU stages (stride 2 after the first), global pool, linear: the zoo's shape in miniature."""

    def __init__(self, widths=(4, 8, 16), num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        layers, c_in = [], in_channels
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(nn.Conv2d(c_in, w, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()))
            c_in = w
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self.stage_names = [f"stages.{i}" for i in range(len(widths))]

    def forward(self, x):
        return self.fc(self.pool(self.stages(x)).flatten(1))


def with_outlier_channel(model: TinyNet, factor: float = 300.0) -> TinyNet:
    """A copy of ``model`` whose stage-0 channel 0 is ``factor``× larger after BN and whose stage-1 conv divides it
    back: the same function in fp32, but one int8 range that crushes every other channel of that tensor."""
    broken = TinyNet(tuple(s[0].out_channels for s in model.stages), model.fc.out_features, model.stages[0][0].in_channels)
    broken.load_state_dict(model.state_dict())
    broken.eval()
    with torch.no_grad():
        bn = broken.stages[0][1]
        bn.weight[0] *= factor
        bn.bias[0] *= factor
        broken.stages[1][0].weight[:, 0] /= factor
    return broken


@pytest.fixture
def tiny_student():
    torch.manual_seed(0)
    return TinyNet((4, 8, 16))


@pytest.fixture
def tiny_teacher():
    torch.manual_seed(1)
    return TinyNet((8, 16, 32, 32))


TINY_RECIPE = """
name: tiny
data:
  dataset: digits
  max_train: 300
  max_test: 120
  calibration_size: 32
  batch_size: 64
teacher:
  arch: resnet8
  epochs: 4
  lr: 0.1
student:
  arch: resnet8
  arch_args: {}
distill:
  method: kd
  epochs: 1
qat:
  epochs: 1
target:
  check_before_training: false
"""


@pytest.fixture
def tiny_recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE + f"runs_dir: {tmp_path / 'runs'}\n")
    return path


def trained_resnet8(x: torch.Tensor, y: torch.Tensor, batch: int) -> nn.Module:
    """resnet8 (1 channel, 10 classes) after two SGD epochs on ``x``/``y``: int8 of an untrained net would miss
    the export's fidelity check, so export tests need a model that has learned something."""
    import torch.nn.functional as F

    from pipeline.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        for i in range(0, len(x), batch):
            loss = F.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model

