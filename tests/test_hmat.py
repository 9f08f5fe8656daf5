"""HMAT: each attention map on hand-made tensors, the loss's terms and switches, gradients, memory."""

import math

import pytest
import torch
from pydantic import ValidationError

from pipeline.distill.at import at_distance
from pipeline.distill.hmat import (
    HMATLoss,
    attention_distance,
    channel_attention,
    position_attention,
    position_term_saved_bytes,
)
from pipeline.distill.options import HMATOptions
from pipeline.distill.trainer import DistillStep, LossWeights
from pipeline.train.supervision import freeze
from pipeline.errors import PipelineError
from pipeline.models.taps import FeatureTaps, ModelIO, probe

from conftest import TinyNet

SHAPE = (1, 8, 8)


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def io(*stages):
    return ModelIO(logits=torch.zeros(stages[0].shape[0], 10), feats={f"s{i}": f for i, f in enumerate(stages)})


def infos(student, teacher):
    return probe(student, student.stage_names, SHAPE, 10), probe(teacher, teacher.stage_names, SHAPE, 10)


def test_position_attention_hand_computed():
    f = torch.zeros(1, 2, 1, 3)
    f[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    f[0, :, 0, 1] = torch.tensor([3.0, 4.0])  # unit over channels: (0.6, 0.8); cos with position 0 = 0.6
    # position 2 is all zero (dead ReLUs): similarity 0 to everything, a uniform row, no NaN
    p = position_attention(f)[0]
    e = math.e
    row0 = torch.tensor([e, e**0.6, 1.0]) / (e + e**0.6 + 1)
    row1 = torch.tensor([e**0.6, e, 1.0]) / (e**0.6 + e + 1)
    assert torch.allclose(p, torch.stack([row0, row1, torch.full((3,), 1 / 3)]), atol=1e-6)
    # τ sharpens: at τ = 0.5 the row-0 logits are (2, 1.2, 0)
    p_half = position_attention(f, temperature=0.5)[0, 0]
    assert torch.allclose(p_half, torch.tensor([e**2, e**1.2, 1.0]) / (e**2 + e**1.2 + 1), atol=1e-6)


def test_position_attention_pools_before_the_affinity():
    # four 2×2 blocks of constant channel vectors: pooled to 2×2 they are exactly those vectors
    f = torch.zeros(1, 2, 4, 4)
    f[0, 0, :2, :2] = 1.0  # block (0,0): (1, 0)
    f[0, 1, :2, 2:] = 1.0  # block (0,1): (0, 1)
    f[0, :, 2:, :] = 1.0  # blocks (1,0), (1,1): (1, 1) → cos 1/√2 with either axis
    p = position_attention(f, size=(2, 2))
    assert p.shape == (1, 4, 4)
    c = 2**-0.5
    logits = torch.tensor([1.0, 0.0, c, c])
    assert torch.allclose(p[0, 0], logits.softmax(0), atol=1e-6)


def test_channel_attention_hand_computed():
    f = torch.zeros(1, 2, 1, 2)
    f[0, 0] = torch.tensor([[1.0, 0.0]])
    f[0, 1] = torch.tensor([[1.0, 1.0]])  # unit over positions (1/√2, 1/√2): cos 1/√2 with channel 0
    g = channel_attention(f)[0]
    s = sigmoid(1 - 2**-0.5)  # softmax([1, 1/√2]) = (s, 1 − s)
    assert torch.allclose(g, torch.tensor([[s, 1 - s], [1 - s, s]]), atol=1e-6)


def test_attention_distances_hand_computed():
    sim_s = torch.zeros(1, 2, 2)  # uniform rows (0.5, 0.5)
    sim_t = torch.eye(2)[None]  # rows softmax(1, 0) = (σ(1), 1 − σ(1))
    q = sigmoid(1.0)
    # mse in units of the uniform row: every entry differs by n·|q − 0.5| = 2·(q − 0.5)
    assert attention_distance(sim_s, sim_t, 1.0, "mse").item() == pytest.approx((2 * (q - 0.5)) ** 2, rel=1e-5)
    kl = q * math.log(q / 0.5) + (1 - q) * math.log((1 - q) / 0.5)
    assert attention_distance(sim_s, sim_t, 1.0, "kl").item() == pytest.approx(kl, rel=1e-5)


def test_default_levels_are_first_middle_last_and_activation_is_at(tiny_student, tiny_teacher):
    crit = HMATLoss(HMATOptions(position=False, channel=False, beta=1000.0), *infos(tiny_student, tiny_teacher))
    assert crit.s_idx == (0, 1, 2) and crit.t_idx == (0, 2, 3)  # 3 student stages, 4 teacher stages
    torch.manual_seed(0)
    s = [torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4), torch.rand(2, 16, 2, 2)]
    t = [torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4), torch.rand(2, 32, 2, 2), torch.rand(2, 32, 2, 2)]
    scale = 8 * 8 / 32**2  # the position scale at SHAPE's 8×8 input (at.py)
    expected = 1000 * scale * (at_distance(s[1], t[2]) + at_distance(s[2], t[3]))
    assert crit(io(*s), io(*t), None).item() == pytest.approx(expected.item(), rel=1e-6)


def test_each_term_switches_and_weighs(tiny_student, tiny_teacher):
    torch.manual_seed(0)
    s = io(torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4), torch.rand(2, 16, 2, 2))
    t = io(torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4), torch.rand(2, 32, 2, 2), torch.rand(2, 32, 2, 2))
    full = HMATLoss(HMATOptions(lambda_p=2.0, beta=3.0, lambda_c=5.0), *infos(tiny_student, tiny_teacher)).eval()
    terms = full.terms(s, t)
    assert set(terms) == {"position", "activation", "channel"} and all(v.item() > 0 for v in terms.values())
    assert full(s, t, None).item() == pytest.approx((2 * terms["position"] + 3 * terms["activation"] + 5 * terms["channel"]).item(), rel=1e-6)
    for only in ("position", "activation", "channel"):
        opts = HMATOptions(**{k: k == only for k in ("position", "activation", "channel")}, lambda_p=2.0, beta=3.0, lambda_c=5.0)
        crit = HMATLoss(opts, *infos(tiny_student, tiny_teacher)).eval()
        crit.load_state_dict(full.state_dict(), strict=False)  # the same adapter where there is one
        assert set(crit.terms(s, t)) == {only}
        assert crit.terms(s, t)[only].item() == pytest.approx(terms[only].item(), rel=1e-6)
    with pytest.raises(ValidationError, match="at least one"):
        HMATOptions(position=False, activation=False, channel=False)


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_zero_when_student_equals_teacher(tiny_student, kind):
    tiny_student.eval()
    crit = HMATLoss(HMATOptions(position_loss=kind, channel_loss=kind), *infos(tiny_student, tiny_student))
    assert isinstance(crit.adapter, torch.nn.Identity) and not list(crit.parameters())
    with torch.no_grad(), FeatureTaps(tiny_student, tiny_student.stage_names) as taps:
        same = taps.run(torch.randn(4, *SHAPE))
        terms = crit.terms(same, same)
    assert all(abs(v.item()) < 1e-6 for v in terms.values()), terms


def test_gradients_reach_only_the_student_and_the_adapter(tiny_student, tiny_teacher):
    freeze(tiny_teacher)
    crit = HMATLoss(HMATOptions(), *infos(tiny_student, tiny_teacher))
    assert isinstance(crit.adapter, torch.nn.Sequential)  # 16 → 32 channels on the high stage
    weights = LossWeights(w_ce=1.0, w_kd=0.0, w_feat=1.0, temperature=4.0)
    step = DistillStep(FeatureTaps(tiny_student, tiny_student.stage_names), FeatureTaps(tiny_teacher, tiny_teacher.stage_names), crit, weights)
    loss, _ = step(torch.randn(8, *SHAPE), torch.arange(8))
    loss.backward()
    assert all(p.grad is None for p in tiny_teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crit.adapter.parameters())
    # the exported student is the backbone alone: none of the adapter's tensors are in it
    assert set(tiny_student.state_dict()) == set(TinyNet((4, 8, 16)).state_dict())
    assert not {id(p) for p in tiny_student.parameters()} & {id(p) for p in crit.parameters()}
    assert sum(p.numel() for p in tiny_student.parameters()) == sum(p.numel() for p in TinyNet((4, 8, 16)).parameters())


def test_levels_by_name_and_bad_levels(tiny_student, tiny_teacher):
    s_info, t_info = infos(tiny_student, tiny_teacher)
    crit = HMATLoss(HMATOptions(student_stages=("stages.0", "stages.2", -1), teacher_stages=(1, 2, "stages.3")), s_info, t_info)
    assert crit.s_idx == (0, 2, 2) and crit.t_idx == (1, 2, 3)
    with pytest.raises(PipelineError, match="student_stages: 3 is out of range"):
        HMATLoss(HMATOptions(student_stages=(0, 1, 3)), s_info, t_info)
    with pytest.raises(PipelineError, match="teacher_stages: no stage 'layer9'"):
        HMATLoss(HMATOptions(teacher_stages=(0, 1, "layer9")), s_info, t_info)


def test_position_memory_is_bounded_by_pooling():
    # a CIFAR ResNet's low stage for 32×32 inputs: pooled to 16×16, N = 256 instead of 1024
    fs, ft = torch.rand(2, 4, 32, 32), torch.rand(2, 4, 32, 32)
    n_pooled = 16 * 16
    pooled = position_term_saved_bytes(fs, ft, max_side=16)
    full = position_term_saved_bytes(fs, ft, max_side=32)
    assert pooled <= 3 * 2 * n_pooled**2 * 4  # ≈ 2·B·N²·4 bytes kept for the backward (B = 2)
    assert full >= 12 * pooled
