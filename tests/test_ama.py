"""AMA: the adapted teacher's shape and wiring, its early stop, the loss value, the adaptation phase,
its cache, and that nothing but the student backbone is trained by or exported from distillation."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.config import validate_config
from pipeline.distill.ama import ADAPTED, AMALoss
from pipeline.distill.options import AMAOptions
from pipeline.distill.trainer import DistillStep, LossWeights
from pipeline.train.supervision import freeze
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.taps import FeatureTaps, ModelIO, probe

from conftest import TinyNet

SHAPE = (1, 16, 16)


def data(n=32, seed=0, separable=False):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randn(n, *SHAPE, generator=g)
    if separable:  # each class lights up its own row band: learnable from any random feature extractor
        for c in range(10):
            x[y == c, :, c : c + 6, :] += 3.0
    return DataLoader(TensorDataset(x, y), batch_size=16)


def model(arch):
    torch.manual_seed(0)
    return TinyNet((8, 16, 32, 32)) if arch == "tiny_t" else TinyNet((4, 8, 16)) if arch == "tiny_s" else build_model(arch, 10, 1)


def adapted(teacher, student, tmp_path, loader=None, **options):
    freeze(teacher)
    crit = AMALoss(AMAOptions(**{"epochs": 0, **options}),
                   probe(student, student.stage_names, SHAPE, 10), probe(teacher, teacher.stage_names, SHAPE, 10))
    taps = FeatureTaps(teacher, teacher.stage_names)
    metrics = crit.prepare_teacher(teacher, taps, loader or data(), tmp_path)
    return crit, taps, metrics


@pytest.mark.parametrize("t_arch,s_arch,options", [
    ("tiny_t", "tiny_s", {}),
    ("resnet20", "resnet8", {}),
    ("resnet20", "resnet8", {"width": 24}),  # A narrower than the student: a 1×1 regressor appears
    ("wrn_16_2", "resnet8", {"after": 0, "replaces": 2}),  # 32 → 64 channels, two stages replaced
    ("mobilenetv2", "shufflenetv2_0_5", {"head": "new"}),  # 4 stages → 3, new head
    ("shufflenetv2_0_5", "resnet8", {"after": 0, "student_stage": 1}),
])
def test_module_output_has_the_student_stage_shape(t_arch, s_arch, options, tmp_path):
    teacher, student = model(t_arch), model(s_arch)
    crit, taps, _ = adapted(teacher, student, tmp_path, **options)
    x = torch.randn(3, *SHAPE)
    io = crit.teacher_forward(taps, x)
    with FeatureTaps(student, student.stage_names) as s_taps:
        fs = s_taps.run(x).stages[crit.m]
    c, h, w = fs.shape[1:]
    assert io.logits.shape == (3, 10)
    assert io.feats[ADAPTED].shape == (3, options.get("width", c), h, w)
    assert crit.regressor(fs).shape == io.feats[ADAPTED].shape
    assert isinstance(crit.regressor, nn.Conv2d) == ("width" in options)


def test_adapted_teacher_is_cut_after_stage_k_and_reuses_the_teacher_head(tmp_path):
    teacher, student = model("resnet20"), model("resnet8")
    crit, taps, _ = adapted(teacher, student, tmp_path)  # after layer2, replaces layer3; epochs 0: tail = teacher's
    calls = {"layer2": 0, "layer3": 0}
    for name in calls:
        getattr(teacher, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        io = crit.teacher_forward(taps, x)
        a = crit.adapted["module"](teacher.layer2(teacher.layer1(teacher.relu(teacher.bn1(teacher.conv1(x))))))
        expected = teacher.fc(teacher.pool(a).flatten(1))
    assert calls == {"layer2": 2, "layer3": 0}  # once in the forward, once above; the replaced stage never runs
    assert torch.allclose(io.feats[ADAPTED], a, atol=1e-6)
    assert torch.allclose(io.logits, expected, atol=1e-5)


def test_hand_computed_loss(tmp_path):
    s_info = probe(model("tiny_s"), model("tiny_s").stage_names, SHAPE, 10)
    t_info = probe(model("tiny_t"), model("tiny_t").stage_names, SHAPE, 10)
    crit = AMALoss(AMAOptions(), s_info, t_info)  # student stage 2 (16 ch) ↔ A of width 16: no regressor
    assert crit.m == 2
    fs = torch.full((2, 16, 4, 4), 3.0)
    teacher = ModelIO(torch.zeros(2, 10), {ADAPTED: torch.full((2, 16, 4, 4), 1.0)})
    student = ModelIO(torch.zeros(2, 10), {"a": None, "b": None, "c": fs})
    assert crit(student, teacher, None).item() == pytest.approx(4.0)  # mean (3 − 1)²
    crit = AMALoss(AMAOptions(width=5), s_info, t_info)
    nn.init.constant_(crit.regressor.weight, 0.5 / 16)  # r(F) = Σ_c 0.5/16·3 + 0.25 = 1.75 everywhere
    nn.init.constant_(crit.regressor.bias, 0.25)
    teacher.feats[ADAPTED] = torch.ones(2, 5, 4, 4)
    assert crit(student, teacher, None).item() == pytest.approx(0.75**2)


def test_adaptation_makes_the_adapted_teacher_classify_and_leaves_the_teacher(tmp_path):
    teacher, student = model("tiny_t"), model("tiny_s")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    loader = data(160, separable=True)
    crit, _, metrics = adapted(teacher, student, tmp_path, loader, epochs=4, lr=0.1)
    assert metrics["cached"] is False and metrics["adapt_epochs"] == 4
    assert metrics["adapted_train_acc"] > 0.6  # chance is 0.1; the random teacher's own head is near it
    assert metrics["adapted_ms_per_batch"] > 0 and metrics["teacher_ms_per_batch"] > 0
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert all(not p.requires_grad for p in crit.adapted.parameters())


def test_gradients_reach_student_and_regressor_never_teacher_or_module(tmp_path):
    teacher, student = model("resnet20"), model("resnet8")
    crit, taps, _ = adapted(teacher, student, tmp_path, epochs=1, width=24)
    frozen = {k: v.clone() for k, v in crit.adapted.state_dict().items()}
    crit.train()  # what the training loop does every epoch: the adapted teacher must stay in eval mode
    assert not any(m.training for m in crit.adapted.modules())
    weights = LossWeights(w_ce=0.1, w_kd=0.9, w_feat=10.0, temperature=4.0)
    with FeatureTaps(student, student.stage_names) as s_taps:
        loss, _ = DistillStep(s_taps, taps, crit, weights)(torch.randn(8, *SHAPE), torch.arange(8))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in crit.adapted.parameters())
    assert crit.regressor.weight.grad is not None and crit.regressor.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in student.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in crit.adapted.state_dict().items())  # BN statistics too


def test_adaptation_is_cached_and_reused(tmp_path):
    teacher, student = model("tiny_t"), model("tiny_s")
    first, _, m1 = adapted(teacher, student, tmp_path, epochs=1)
    torch.manual_seed(123)  # another student seed: a different fresh module, same cached adaptation
    second, _, m2 = adapted(teacher, student, tmp_path, epochs=1)
    assert (m1["cached"], m2["cached"]) == (False, True)
    assert m1["adapted_train_acc"] == m2["adapted_train_acc"]
    assert all(torch.equal(v, second.adapted.state_dict()[k]) for k, v in first.adapted.state_dict().items())
    _, _, m3 = adapted(teacher, student, tmp_path, epochs=2)  # other options: its own entry
    assert m3["cached"] is False
    _, _, m4 = adapted(teacher, student, tmp_path, data(32, seed=1), epochs=1)  # other data
    assert m4["cached"] is False
    assert len(list((tmp_path / "ama").glob("*.pt"))) == 3


def test_exported_student_is_exactly_the_backbone(tmp_path):
    teacher, student = model("tiny_t"), model("tiny_s")
    crit, taps, _ = adapted(teacher, student, tmp_path, epochs=1, width=12)
    weights = LossWeights(w_ce=0.1, w_kd=0.9, w_feat=10.0, temperature=4.0)
    with FeatureTaps(student, student.stage_names) as s_taps:
        opt = torch.optim.SGD([p for m in (student, crit) for p in m.parameters() if p.requires_grad], lr=0.1)
        for _ in range(2):
            loss, _ = DistillStep(s_taps, taps, crit, weights)(torch.randn(8, *SHAPE), torch.arange(8))
            opt.zero_grad()
            loss.backward()
            opt.step()
    fresh = TinyNet((4, 8, 16))
    assert {k: v.shape for k, v in student.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    assert not {id(p) for p in student.parameters()} & {id(p) for p in crit.parameters()}


def test_option_mistakes_are_one_line_errors(tmp_path):
    s_info = probe(model("resnet8"), ["layer1", "layer2", "layer3"], SHAPE, 10)
    t_info = probe(model("resnet20"), ["layer1", "layer2", "layer3"], SHAPE, 10)
    with pytest.raises(PipelineError, match="replaces: 2 teacher stage.*only 1 follow"):
        AMALoss(AMAOptions(replaces=2), s_info, t_info)
    with pytest.raises(PipelineError, match="student_stage: 5 is out of range"):
        AMALoss(AMAOptions(student_stage=5), s_info, t_info)
    with pytest.raises(ValidationError):
        AMAOptions(blocks=0)
    raw = {"distill": {"method": "ama", "options": {"widht": 8}}}
    with pytest.raises(PipelineError, match="distill.options.widht: unknown key.*did you mean 'width'"):
        validate_config(raw)


def test_untraceable_teacher_is_a_pipeline_error(tmp_path):
    class Branchy(TinyNet):
        def forward(self, x):
            return super().forward(x) if x.sum() > 0 else super().forward(-x)  # data-dependent: fx cannot trace

    torch.manual_seed(0)
    with pytest.raises(PipelineError, match="cannot trace the teacher"):
        adapted(Branchy((8, 16, 32, 32)), model("tiny_s"), tmp_path)
