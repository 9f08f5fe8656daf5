"""timm models by name (``timm:<name>``): logits, stage taps from timm's feature_info, the rewrite into
plain torch.nn layers (same function, timm's own weight files still load), and every feature-based
distillation method and QAT working on them unchanged."""

from __future__ import annotations

import math

import pytest
import torch
from torch import fx, nn

from pipeline.config import validate_config
from pipeline.distill import LOSSES
from pipeline.distill.trainer import DistillStep, LossWeights
from pipeline.train.supervision import freeze
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.taps import FeatureTaps, probe, stage_names_of
from pipeline.models.weights import fit_weights

timm = pytest.importorskip("timm")

NUM_CLASSES = 7
# Edge-TPU-friendly (minimal, lite), the hard-swish original, a ResNet, a tiny one
MODELS = ["tf_mobilenetv3_small_minimal_100", "mobilenetv3_small_100", "tf_efficientnet_lite0", "resnet18", "lcnet_050"]


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", MODELS)
def test_logits_stages_and_input_channels(name, in_channels):
    torch.manual_seed(0)
    model = build_model(f"timm:{name}", NUM_CLASSES, in_channels).eval()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_channels
    reductions = {e["module"]: e["reduction"] for e in model.feature_info}
    assert [reductions[n] for n in model.stage_names] == [4, 8, 16, 32]  # one tap per stride, from timm's own record
    x = torch.randn(2, in_channels, 32, 32)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    info = probe(model, stage_names_of(model), (in_channels, 32, 32), NUM_CLASSES)
    assert [h for _, h, _ in info.stage_shapes] == [8, 4, 2, 1]


@pytest.mark.parametrize("name", ["tf_mobilenetv3_small_minimal_100", "mobilenetv3_small_100", "tf_efficientnet_lite0"])
def test_plain_layers_compute_what_timm_computes_and_load_timms_weights(name):
    """timm's own model and its state_dict (as a timm weight file holds it) give the same logits in ours."""
    from timm.layers import BatchNormAct2d
    from timm.layers.conv2d_same import Conv2dSame

    torch.manual_seed(0)
    original = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, in_chans=3).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a mis-mapped buffer shows
        for m in original.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ours = build_model(f"timm:{name}", NUM_CLASSES, 3)
    assert not any(isinstance(m, (BatchNormAct2d, Conv2dSame)) for m in ours.modules())
    assert fit_weights(ours, original.state_dict(), head="keep", what="student.checkpoint", path="w.pth", arch=name) == []
    x = torch.randn(2, 3, 48, 40)  # odd sizes after striding: "same" padding turns asymmetric
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), original(x), atol=1e-5)
    fx.symbolic_trace(ours)  # what QAT's conv-BN fusion and AMA's teacher graph need


FEATURE_LOSSES = sorted(n for n, c in LOSSES.items() if c.needs_features)


@pytest.mark.parametrize("method", FEATURE_LOSSES)
@pytest.mark.parametrize("teacher_arch,student_arch", [("timm:resnet10t", "timm:tf_mobilenetv3_small_minimal_100"),
                                                       ("timm:tf_efficientnet_lite0", "timm:lcnet_050")])
def test_every_feature_method_distils_timm_models(method, teacher_arch, student_arch, tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    shape = (3, 16, 16)
    torch.manual_seed(0)
    teacher, student = build_model(teacher_arch, 10, 3).eval(), build_model(student_arch, 10, 3)
    freeze(teacher)
    cls = LOSSES[method]
    options = cls.Options(**({"epochs": 1} if "epochs" in cls.Options.model_fields else {}))
    criterion = cls(options, probe(student, student.stage_names, shape, 10), probe(teacher, teacher.stage_names, shape, 10))
    s_taps, t_taps = FeatureTaps(student, student.stage_names), FeatureTaps(teacher, teacher.stage_names)
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, *shape, generator=g), torch.arange(16) % 10), batch_size=8)
    criterion.prepare_teacher(teacher, t_taps, data, tmp_path)
    weights = LossWeights.resolve(type("C", (), {"w_ce": None, "w_kd": None, "w_feat": None, "temperature": 4.0})(), cls)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student.train()
    loss, logits = DistillStep(s_taps, t_taps, criterion, weights)(torch.randn(4, *shape), torch.arange(4))
    loss.backward()
    assert math.isfinite(loss.item()) and logits.shape == (4, 10)
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())


def test_qat_fuses_and_copies_back_a_timm_student():
    """prepare_qat traces the rewritten model (conv-BN fused, fake-quant inserted); copy_back restores it exactly."""
    from pipeline.qat.fake_quant import copy_back, prepare_qat
    from pipeline.target import TARGETS

    torch.manual_seed(0)
    model = build_model("timm:tf_mobilenetv3_small_minimal_100", 10, 1).eval()
    qat = prepare_qat(model, TARGETS["edge_tpu"], torch.randn(2, 1, 16, 16))
    fused = [n for n, m in qat.named_modules() if type(m).__name__.startswith("ConvBn")]
    assert len(fused) >= 10
    fresh = build_model("timm:tf_mobilenetv3_small_minimal_100", 10, 1)
    copy_back(qat, fresh)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), model(x), atol=1e-6)


@pytest.mark.parametrize(
    "arch,expected",
    [
        ("timm:mobilenetv3_small_minimal_100", "unknown timm model 'mobilenetv3_small_minimal_100' (did you mean "
                                               "timm:tf_mobilenetv3_small_minimal_100,"),
        ("timm:resnet19", "did you mean timm:resnet18,"),
        ("resnet18", "did you mean 'timm:resnet18' or 'torchvision:resnet18'?"),
        ("tim:resnet18", "unknown model library 'tim:' (known: timm:<name>, torchvision:<name>); did you mean 'timm:resnet18'?"),
        ("torchvision:mobilenet_v4", "unknown torchvision model 'mobilenet_v4' (did you mean torchvision:mobilenet_v2,"),
    ],
)
def test_unknown_names_are_one_line_with_matches_from_the_right_list(arch, expected):
    with pytest.raises(PipelineError) as err:
        validate_config({"student": {"arch": arch}}, "r.yaml")
    message = str(err.value)
    assert message.startswith(f"r.yaml: student.arch: ") and expected in message and "\n" not in message
    assert "'resnet8'" not in message  # a library name is never answered with a zoo name


def test_known_list_names_every_library():
    with pytest.raises(PipelineError, match=r"known: .*vgg8, .*timm:<name>, torchvision:<name>\); did you mean 'resnet32'"):
        validate_config({"teacher": {"arch": "resnet33"}}, "r.yaml")
    assert validate_config({"student": {"arch": "timm:mobilenetv3_small_100.lamb_in1k"}}).student.arch.startswith("timm:")
