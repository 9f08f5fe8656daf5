"""One contract every registered distillation loss must meet (new methods are covered with no test edits)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from pipeline.distill import LOSSES
from pipeline.distill.trainer import DistillStep, LossWeights
from pipeline.train.supervision import freeze
from pipeline.models.taps import FeatureTaps, probe

from conftest import TinyNet

SHAPE = (1, 8, 8)


def build(name, student, teacher, tmp_path):
    cls = LOSSES[name]
    crit = cls(cls.Options(), probe(student, student.stage_names, SHAPE, 10), probe(teacher, teacher.stage_names, SHAPE, 10))
    s_taps, t_taps = FeatureTaps(student, student.stage_names), FeatureTaps(teacher, teacher.stage_names)
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(32, *SHAPE, generator=g), torch.arange(32) % 10), batch_size=16)
    crit.prepare_teacher(teacher, t_taps, data, tmp_path)
    return crit, s_taps, t_taps


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_reach_only_the_student_and_training_only_modules(name, tiny_student, tiny_teacher, tmp_path):
    freeze(tiny_teacher)
    crit, s_taps, t_taps = build(name, tiny_student, tiny_teacher, tmp_path)
    teacher_before = {k: v.clone() for k, v in tiny_teacher.state_dict().items()}
    weights = LossWeights.resolve(type("C", (), {"w_ce": None, "w_kd": None, "w_feat": None, "temperature": 4.0})(), type(crit))
    step = DistillStep(s_taps, t_taps, crit, weights)
    x, y = torch.randn(8, *SHAPE), torch.arange(8)
    loss, logits = step(x, y)
    assert loss.ndim == 0 and math.isfinite(loss.item()) and logits.shape == (8, 10)
    loss.backward()
    assert all(p.grad is None for p in tiny_teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_student.parameters())
    # the method's own modules are separate from the student: export sees the backbone only
    student_ids = {id(p) for p in tiny_student.parameters()}
    assert not student_ids & {id(p) for p in crit.parameters()}
    assert set(tiny_student.state_dict()) == set(TinyNet((4, 8, 16)).state_dict())
    for k, v in tiny_teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher {k} changed"


@pytest.mark.parametrize("name", sorted(n for n, c in LOSSES.items() if c.zero_when_identical))
def test_zero_when_student_equals_teacher(name, tiny_student, tmp_path):
    tiny_student.eval()
    crit, s_taps, _ = build(name, tiny_student, tiny_student, tmp_path)
    crit.eval()
    x = torch.randn(6, *SHAPE)
    with torch.no_grad():
        io = s_taps.run(x)
        value = crit(io, io, torch.arange(6))
    assert abs(value.item()) < 1e-5


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_method_declares_its_default_weights(name):
    cls = LOSSES[name]
    assert set(cls.defaults) == {"w_ce", "w_kd", "w_feat"}
    assert cls.__doc__, f"{name}: the loss class must state its equation and cite its paper"


def test_kd_hand_computed():
    from pipeline.train.supervision import kd_loss

    zs, zt = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0) * 2, 0.0]])
    # T=2: p_t = softmax([ln3, 0]) = [3/4, 1/4]; p_s = [1/2, 1/2]
    expected = 4 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert kd_loss(zs, zt, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_at_hand_computed():
    from pipeline.distill.at import at_distance, attention_map

    f = torch.zeros(1, 2, 1, 2)
    f[0, :, 0, 0] = torch.tensor([1.0, 3.0])  # mean_c F² = 5 at position 0, 0 at position 1
    assert torch.allclose(attention_map(f), torch.tensor([[1.0, 0.0]]))
    g = torch.ones(1, 1, 1, 2)  # a = [1/√2, 1/√2]
    expected = ((1 - 2**-0.5) ** 2 + 0.5) / 2
    assert at_distance(f, g).item() == pytest.approx(expected, rel=1e-6)
    # a larger map is average-pooled to the smaller size first
    big = torch.ones(1, 1, 4, 4)
    assert at_distance(big, torch.ones(1, 1, 2, 2)).item() == pytest.approx(0.0, abs=1e-7)


def test_fitnet_hand_computed(tiny_student, tiny_teacher):
    from pipeline.distill.fitnet import FitNetLoss
    from pipeline.distill.options import FitNetOptions

    crit = FitNetLoss(FitNetOptions(), probe(tiny_student, tiny_student.stage_names, SHAPE, 10),
                      probe(tiny_teacher, tiny_teacher.stage_names, SHAPE, 10))
    crit.eval()
    fs, ft = torch.randn(2, 8, 4, 4), torch.randn(2, 32, 2, 2)
    s = type("IO", (), {"stages": [None, fs, None]})()
    t = type("IO", (), {"stages": [None, None, ft, None]})()
    expected = F.mse_loss(F.adaptive_avg_pool2d(crit.regressor(fs), (2, 2)), ft)
    assert crit(s, t, None).item() == pytest.approx(expected.item(), rel=1e-6)
