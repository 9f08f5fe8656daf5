"""AFD (attention-based feature distillation), the attention baseline RTK must beat: hand-computed
values, attention shape, mismatched pairs, gradients and export hygiene."""

import math

import pytest
import torch

from pipeline.distill import LOSSES
from pipeline.distill.afd import AFDLoss
from pipeline.distill.options import AFDOptions
from pipeline.distill.trainer import DistillStep, LossWeights
from pipeline.train.supervision import freeze
from pipeline.models import build_model
from pipeline.models.taps import FeatureTaps, ModelInfo, ModelIO, probe

from conftest import TinyNet

R = 1 / math.sqrt(2)


def io_and_info(**feats):
    """Probed at a 32×32 input, where the position scale is 1: the values are the published loss's."""
    info = ModelInfo(tuple(feats), tuple(tuple(f.shape[1:]) for f in feats.values()), 10, (1, 32, 32))
    return ModelIO(torch.zeros(1, 10), feats), info


# energy maps (mean_c F²):  S1 2×2 [[1,0],[0,0]],  S2 1×2 [4,0];  T1 2×2 [[1,1],[0,0]],  T3 1×2 [0,1]
S1, S2 = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]), torch.tensor([[[[2.0, 0.0]]]])
T1, T3 = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]]), torch.tensor([[[[0.0, 1.0]]]])


def test_single_student_stage_takes_all_the_attention():
    s, si = io_and_info(s2=S2)
    t, ti = io_and_info(t1=T1, t3=T3)
    crit = AFDLoss(AFDOptions(dim=4), si, ti).eval()
    # S2 → T1's 2×2: [4,0] repeated per row → [r,0,r,0] vs [r,r,0,0]: mean (0 + ½ + ½ + 0)/4 = 1/4
    # S2 → T3's 1×2: [1,0] vs [0,1]: mean (1 + 1)/2 = 1;  α = 1 (one student stage)
    assert crit(s, t, None).item() == pytest.approx(0.25 + 1.0, rel=1e-5)


def test_uniform_attention_hand_computed():
    s, si = io_and_info(s1=S1, s2=S2)
    t, ti = io_and_info(t1=T1, t3=T3)
    crit = AFDLoss(AFDOptions(dim=4), si, ti).eval()
    with torch.no_grad():
        for p in crit.parameters():
            p.zero_()  # every logit 0 → α = ½ over the two student stages
    alpha = crit.attention(s.stages, t.stages)
    assert alpha.shape == (1, 2, 2) and torch.allclose(alpha, torch.full((1, 2, 2), 0.5))
    # T1 (2×2): S1 [1,0,0,0] vs [r,r,0,0] → ((1−r)² + r²)/4;  S2 → 1/4 (as above)
    # T3 (1×2): S1 pooled to 1×2 [.5,0] → [1,0] vs [0,1] → 1;  S2 → 1
    expected = 0.5 * (((1 - R) ** 2 + R**2) / 4 + 0.25) + 0.5 * (1 + 1)
    assert crit(s, t, None).item() == pytest.approx(expected, rel=1e-5)


def test_attention_is_a_distribution_over_student_stages(tiny_student, tiny_teacher):
    shape = (1, 8, 8)
    crit = AFDLoss(AFDOptions(), probe(tiny_student, tiny_student.stage_names, shape, 10),
                   probe(tiny_teacher, tiny_teacher.stage_names, shape, 10))
    x = torch.randn(5, *shape)
    with FeatureTaps(tiny_student, tiny_student.stage_names) as st, FeatureTaps(tiny_teacher, tiny_teacher.stage_names) as tt:
        alpha = crit.attention(st.run(x).stages, tt.run(x).stages)
    assert alpha.shape == (5, 4, 3)  # B × teacher stages × student stages
    assert torch.allclose(alpha.sum(-1), torch.ones(5, 4)) and (alpha > 0).all()


@pytest.mark.parametrize("teacher_arch,student_arch", [("wrn_40_2", "mobilenetv2"), ("tiny3", "tiny4")])
def test_mismatched_pairs_train_only_the_student_and_export_the_backbone(teacher_arch, student_arch):
    torch.manual_seed(0)
    shape = (3, 16, 16)
    build = lambda a: TinyNet((4, 8, 16) if a == "tiny3" else (8, 16, 32, 32), in_channels=3) if a.startswith("tiny") \
        else build_model(a, 10, 3)  # noqa: E731
    teacher, student = freeze(build(teacher_arch)), build(student_arch)
    crit = AFDLoss(AFDOptions(), probe(student, student.stage_names, shape, 10), probe(teacher, teacher.stage_names, shape, 10))
    step = DistillStep(FeatureTaps(student, student.stage_names), FeatureTaps(teacher, teacher.stage_names), crit,
                       LossWeights(**AFDLoss.defaults, temperature=4.0))
    loss, _ = step(torch.randn(2, *shape), torch.arange(2))
    assert math.isfinite(loss.item()) and step.parts["feat"] > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    # queries, keys, the bilinear map and both stage embeddings all learn
    for name, p in crit.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not {id(p) for p in student.parameters()} & {id(p) for p in crit.parameters()}
    assert list(student.state_dict()) == list(build(student_arch).state_dict())


def test_registered_with_the_authors_defaults():
    assert LOSSES["afd"] is AFDLoss
    assert AFDLoss.defaults == {"w_ce": 1.0, "w_kd": 0.9, "w_feat": 200.0}
    assert AFDOptions().dim == 128


def test_a_last_batch_of_one_sample_trains(tiny_student, tiny_teacher):
    """The loader keeps a last batch of one; BatchNorm1d's batch statistics would fail on it."""
    shape = (1, 8, 8)
    crit = AFDLoss(AFDOptions(), probe(tiny_student, tiny_student.stage_names, shape, 10),
                   probe(tiny_teacher, tiny_teacher.stage_names, shape, 10)).train()
    x = torch.randn(1, *shape)
    with FeatureTaps(tiny_student, tiny_student.stage_names) as st, FeatureTaps(tiny_teacher, freeze(tiny_teacher).stage_names) as tt:
        value = crit(st.run(x), tt.run(x), None)
    assert math.isfinite(value.item())
