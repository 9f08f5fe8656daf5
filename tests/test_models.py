"""The model zoo's contract, run over every ZOO entry (a new model is tested with no edits here),
plus torchvision models by name: logits shape, stage taps, gradients, parameter counts, errors."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from pipeline.errors import PipelineError
from pipeline.models import ZOO, build_model, count_parameters, known_archs
from pipeline.models.shufflenetv2 import channel_shuffle
from pipeline.models.taps import FeatureTaps, probe, stage_names_of
from pipeline.models.wrn import wrn

NUM_CLASSES = 7


def check_stages(model: nn.Module, in_channels: int, size: int) -> None:
    """One feature per stage name, in order, each no larger in H and W than the one before."""
    names = stage_names_of(model)
    info = probe(model, names, (in_channels, size, size), NUM_CLASSES)
    assert info.stage_names == tuple(names)
    assert len(info.stage_shapes) == len(names) >= 3
    for (c, h, w), (_, h_prev, w_prev) in zip(info.stage_shapes[1:], info.stage_shapes[:-1]):
        assert c > 0 and 1 <= h <= h_prev and 1 <= w <= w_prev


# 1 channel at 8×8 (digits, the smallest input the pipeline ships) and 3 channels at 32×32 (CIFAR)
@pytest.mark.parametrize("in_channels,size", [(1, 8), (3, 32)])
@pytest.mark.parametrize("arch", known_archs())
def test_zoo_logits_and_stages(arch, in_channels, size):
    torch.manual_seed(0)
    model = build_model(arch, NUM_CLASSES, in_channels).eval()
    x = torch.randn(2, in_channels, size, size)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()
    check_stages(model, in_channels, size)
    with FeatureTaps(model, model.stage_names) as taps, torch.no_grad():
        io = taps.run(x)
    assert torch.equal(io.logits, logits), "hooks must not change the forward pass"


@pytest.mark.parametrize("arch", known_archs())
def test_zoo_every_parameter_trains(arch):
    """A training step at 28×28 (Fashion-MNIST) reaches every parameter: no module is built but left unused."""
    torch.manual_seed(0)
    model = build_model(arch, NUM_CLASSES, 1).train()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 1, 28, 28)), torch.tensor([0, 1]))
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not unused


# Published sizes: ResNet (He et al. 2016, Table 6, CIFAR-10), WRN (Zagoruyko & Komodakis 2016),
# and the CIFAR-100 student sizes quoted across the KD literature for RepDistiller's models.
PUBLISHED_M = {
    ("resnet20", 10): 0.27,
    ("resnet56", 10): 0.85,
    ("resnet110", 10): 1.7,
    ("wrn_40_2", 100): 2.2,
    ("wrn_16_2", 100): 0.70,
    ("resnet8x4", 100): 1.2,
    ("resnet32x4", 100): 7.4,
    ("mobile_half", 100): 0.81,
    ("shufflenetv2_1_0", 100): 1.35,
    ("vgg13", 100): 9.46,  # RepDistiller's BN-VGGs, as the KD literature quotes them
    ("vgg8", 100): 3.96,
}


@pytest.mark.parametrize("arch,num_classes", sorted(PUBLISHED_M))
def test_parameter_counts_match_literature(arch, num_classes):
    n = count_parameters(build_model(arch, num_classes, 3)) / 1e6
    assert n == pytest.approx(PUBLISHED_M[arch, num_classes], rel=0.05)


def test_arch_args_select_the_same_models_as_the_named_entries():
    count = lambda arch, args=None: count_parameters(build_model(arch, 100, 3, args))  # noqa: E731
    assert count("mobilenetv2", {"width_mult": 0.5}) == count("mobile_half")
    assert count("shufflenetv2", {"net_size": 0.5}) == count("shufflenetv2_0_5")
    assert count("shufflenetv2") == count("shufflenetv2_1_0")
    assert count("mobilenetv2") > 2 * count("mobile_half")


def test_channel_shuffle_is_the_textbook_two_group_shuffle():
    """Channels-last stack/reshape gives what reshape(B, 2, C, H, W) → swap → reshape gives on cat([a, b])."""
    torch.manual_seed(0)
    a, b = torch.randn(2, 6, 3, 5), torch.randn(2, 6, 3, 5)
    x = torch.cat([a, b], 1)
    textbook = x.view(2, 2, 6, 3, 5).transpose(1, 2).reshape(2, 12, 3, 5)
    ours = channel_shuffle(a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1))
    assert torch.equal(ours, textbook)


def test_zoo_models_trace_with_torch_fx():
    """QAT prepares models with torch.fx: shape-dependent Python in forward would break it."""
    for arch in ("wrn_16_1", "mobile_half", "shufflenetv2_0_5"):
        model = build_model(arch, NUM_CLASSES, 1).eval()
        x = torch.randn(2, 1, 16, 16)
        assert torch.allclose(fx.symbolic_trace(model)(x), model(x))


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize(
    "name,stages",
    [
        ("resnet18", ["layer1", "layer2", "layer3", "layer4"]),
        ("mobilenet_v3_small", ["features.1", "features.3", "features.8", "features.12"]),
    ],
)
def test_torchvision_models_by_name(name, stages, in_channels):
    torch.manual_seed(0)
    model = build_model(f"torchvision:{name}", NUM_CLASSES, in_channels).eval()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_channels
    assert model.stage_names == stages
    with torch.no_grad():
        assert model(torch.randn(2, in_channels, 32, 32)).shape == (2, NUM_CLASSES)
    check_stages(model, in_channels, 32)


def test_unknown_family_asks_for_stages_in_the_config():
    model = build_model("torchvision:squeezenet1_1", NUM_CLASSES, 1)
    assert model.stage_names == []
    with pytest.raises(PipelineError, match="stages"):
        stage_names_of(model)
    assert stage_names_of(model, ["features.3"]) == ["features.3"]


@pytest.mark.parametrize(
    "arch,args,message",
    [
        ("resnet9", None, "unknown .resnet9. .known: .*timm:<name>, torchvision:<name>.; did you mean .resnet8."),
        ("torchvision:resnet19", None, "did you mean torchvision:resnet18"),
        ("torchvision:resnet18", {"weights": "IMAGENET1K_V1"}, "no downloads"),
        ("torchvision:resnet18", {"no_such_arg": 1}, "bad arch_args"),
        ("wrn_16_2", {"widen_factor": 4}, "bad arch_args"),
        ("shufflenetv2", {"net_size": 0.7}, "net_size"),
    ],
)
def test_bad_specs_are_pipeline_errors(arch, args, message):
    with pytest.raises(PipelineError, match=message):
        build_model(arch, NUM_CLASSES, 3, args)
    with pytest.raises(PipelineError, match="6n\\+4"):
        wrn(13)


def test_zoo_uses_only_deployable_layers():
    """Zoo models' layers are conv, BN, ReLU, pooling and linear only (int8 TFLite / Edge TPU friendly);
    ShuffleNetV2's split and shuffle are slices and reshapes in forward (see its module docstring)."""
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Linear, nn.Identity)
    for arch in ZOO:
        model = build_model(arch, NUM_CLASSES, 3)
        leaves = {type(m) for m in model.modules() if not list(m.children())}
        assert all(issubclass(t, allowed) for t in leaves), (arch, leaves)
