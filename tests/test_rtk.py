"""RTK (representative teacher keys): hand-computed values for both forms, key filtering, mismatched
teacher/student shapes, gradients and export hygiene."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import validate_config
from pipeline.distill import LOSSES
from pipeline.distill.options import RTKOptions
from pipeline.distill.rtk import RTKLoss, representative_weights
from pipeline.distill.trainer import DistillStep, LossWeights
from pipeline.train.supervision import freeze
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.taps import FeatureTaps, ModelInfo, ModelIO, probe

from conftest import TinyNet

R = 1 / math.sqrt(2)


def tiny_pair():
    """Two student stages, three teacher stages, with AT maps simple enough to work out by hand.

    energy maps (mean_c F²) and the AT maps a↓ each pair compares (pooled to the smaller size):
      S1 2×2 [[1,0],[0,0]]   S2 1×2 [4,0] → a=[1,0]
      T1 2×2 [[1,1],[0,0]]   T2 1×2 (2 channels) [1,0]   T3 1×2 [0,1]
      S1·T1 at 2×2: [1,0,0,0] vs [r,r,0,0]  cos r   D = ((1−r)² + r²)/4 = (2−√2)/4
      S1·T2 at 1×2: S1 pooled [.5,0] → [1,0] vs [1,0]   cos 1   D 0
      S1·T3 at 1×2: [1,0] vs [0,1]  cos 0   D (1+1)/2 = 1
      S2·T1 at 1×2: T1 pooled [.5,.5] → [r,r] vs [1,0]  cos r   D = (2−√2)/2
      S2·T2: cos 1, D 0;   S2·T3: cos 0, D 1
    """
    s = {"s1": torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]), "s2": torch.tensor([[[[2.0, 0.0]]]])}
    t = {
        "t1": torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]]),
        "t2": torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]]),
        "t3": torch.tensor([[[[0.0, 1.0]]]]),
    }
    # probed at a 32×32 input, where the position scale is 1: the values are the published loss's
    info = lambda feats: ModelInfo(tuple(feats), tuple(tuple(f.shape[1:]) for f in feats.values()), 10, (1, 32, 32))  # noqa: E731
    return ModelIO(torch.zeros(1, 10), s), ModelIO(torch.zeros(1, 10), t), info(s), info(t)


D_S1T1, D_S2T1 = (2 - math.sqrt(2)) / 4, (2 - math.sqrt(2)) / 2


def rtk(s_info, t_info, **options):
    return RTKLoss(RTKOptions(**options), s_info, t_info).eval()


def test_cosine_form_hand_computed():
    s, t, si, ti = tiny_pair()
    # t = 0.5: scores per student stage [r, 1, 0]/0.5; top-2 keeps T2 (cos 1) and T1 (cos r):
    # α̃_T1 = e^{2r} / (e^{2r} + e^{2}); T2's D is 0, T3 (D 1) is filtered out
    p = math.exp(2 * R) / (math.exp(2 * R) + math.exp(2))
    expected = p * D_S1T1 + p * D_S2T1
    assert rtk(si, ti, form="cosine", k=2, cosine_temperature=0.5)(s, t, None).item() == pytest.approx(expected, rel=1e-5)
    # k = 3 keeps T3 too: plain softmax weights e^{2r}, e^2, e^0
    z = math.exp(2 * R) + math.exp(2) + 1
    unfiltered = (math.exp(2 * R) * D_S1T1 + 1) / z + (math.exp(2 * R) * D_S2T1 + 1) / z
    assert rtk(si, ti, form="cosine", k=3, cosine_temperature=0.5)(s, t, None).item() == pytest.approx(unfiltered, rel=1e-5)
    assert rtk(si, ti, form="cosine", k=None, cosine_temperature=0.5)(s, t, None).item() == pytest.approx(unfiltered, rel=1e-5)
    # threshold: α = [e^{2r}, e^2, 1]/z ≈ [.33, .59, .08]; τ=0.3 keeps T1, T2 (as top-2), τ=0.4 only T2 (D 0)
    assert rtk(si, ti, form="cosine", k=None, tau=0.3, cosine_temperature=0.5)(s, t, None).item() == pytest.approx(expected, rel=1e-5)
    assert rtk(si, ti, form="cosine", k=None, tau=0.4, cosine_temperature=0.5)(s, t, None).item() == pytest.approx(0.0, abs=1e-7)
    # k = 1: each student stage keeps its single most similar key, T2, whose D is 0
    assert rtk(si, ti, form="cosine", k=1)(s, t, None).item() == pytest.approx(0.0, abs=1e-7)


def test_learned_form_hand_computed():
    s, t, si, ti = tiny_pair()
    crit = rtk(si, ti, form="learned", k=2, dim=4)
    with torch.no_grad():
        for p in crit.parameters():
            p.zero_()
        for bn in [m[1] for m in (*crit.query, *crit.key)]:
            bn.weight.fill_(1.0)  # eval BN with running mean 0, var 1: x / √(1 + 1e-5)
        # gap: S1 .25, S2 1, T1 .5, T2 [.5, .5], T3 .5 → q1 = [1,0,0,0], q2 = [−1,0,0,0]
        crit.query[0][0].weight[0, 0] = 4.0
        crit.query[1][0].weight[0, 0] = -1.0
        # k1 = [1,0,0,0], k2 = [2,0,0,0], k3 = 0
        crit.key[0][0].weight[0, 0] = 2.0
        crit.key[1][0].weight[0] = torch.tensor([2.0, 2.0])
    c2 = 1 / (1 + 1e-5)  # the two BNs' scale, squared
    # scores q·k/√4: S1 → [c2/2, c2, 0]: keeps T2, T1;  S2 → [−c2/2, −c2, 0]: keeps T3, T1
    p1 = math.exp(c2 / 2) / (math.exp(c2 / 2) + math.exp(c2))  # S1's weight on T1 (T2's D is 0)
    p2 = math.exp(-c2 / 2) / (math.exp(-c2 / 2) + 1)  # S2's weight on T1; T3 (D 1) gets 1 − p2
    expected = p1 * D_S1T1 + p2 * D_S2T1 + (1 - p2) * 1.0
    assert crit(s, t, None).item() == pytest.approx(expected, rel=1e-5)


def test_k_equal_to_teacher_stages_gives_plain_attention():
    scores = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(0))
    plain = F.softmax(scores, dim=-1)
    assert torch.allclose(representative_weights(scores, 3, None), plain)
    assert torch.allclose(representative_weights(scores, None, None), plain)
    # fewer keys: exactly k non-zero weights per query, summing to 1, on the k largest scores
    w = representative_weights(scores, 2, None)
    assert torch.equal((w > 0).sum(-1), torch.full((5, 4), 2))
    assert torch.allclose(w.sum(-1), torch.ones(5, 4))
    assert torch.equal(w.argmin(-1), scores.argmin(-1))
    # a threshold no key reaches still keeps the best one
    top = representative_weights(scores, None, 0.99)
    assert torch.equal(top.argmax(-1), scores.argmax(-1)) and torch.allclose(top.max(-1).values, torch.ones(5, 4))


def test_cosine_form_is_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1).eval()
    info = probe(model, model.stage_names, (1, 16, 16), 10)
    with FeatureTaps(model, model.stage_names) as taps, torch.no_grad():
        io = taps.run(torch.randn(4, 1, 16, 16))
        # each stage's best key is itself (cos 1), so with k = 1 nothing else is compared
        assert RTKLoss(RTKOptions(form="cosine", k=1), info, info)(io, io, None).item() == pytest.approx(0.0, abs=1e-6)
        # k = 2 adds each stage's runner-up, a different stage: not zero, by design
        assert RTKLoss(RTKOptions(form="cosine", k=2), info, info)(io, io, None).item() > 1e-4


def build(arch, shape):
    """A zoo model, or a tiny conftest model ("tiny3": 3 stages, "tiny4": 4 stages of other widths)."""
    if arch.startswith("tiny"):
        return TinyNet((4, 8, 16) if arch == "tiny3" else (8, 16, 32, 32), in_channels=shape[0])
    return build_model(arch, 10, shape[0])


# teacher, student, form: 3 → 4 and 4 → 3 stages, different channels and spatial sizes
PAIRS = [
    ("wrn_40_2", "mobilenetv2", "learned"),
    ("resnet32x4", "resnet8x4", "cosine"),
    ("tiny4", "tiny3", "learned"),
    ("tiny4", "tiny3", "cosine"),
    ("tiny3", "tiny4", "learned"),
]


@pytest.mark.parametrize("teacher_arch,student_arch,form", PAIRS)
def test_mismatched_pairs_train_only_the_student_and_export_the_backbone(teacher_arch, student_arch, form):
    torch.manual_seed(0)
    shape = (3, 16, 16)
    teacher, student = freeze(build(teacher_arch, shape)), build(student_arch, shape)
    s_info, t_info = probe(student, student.stage_names, shape, 10), probe(teacher, teacher.stage_names, shape, 10)
    crit = RTKLoss(RTKOptions(form=form), s_info, t_info)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    step = DistillStep(FeatureTaps(student, student.stage_names), FeatureTaps(teacher, teacher.stage_names), crit,
                       LossWeights(**RTKLoss.defaults, temperature=4.0))
    loss, _ = step(torch.randn(2, *shape), torch.arange(2))
    assert math.isfinite(loss.item()) and step.parts["feat"] > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher {k} changed"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    if form == "learned":  # each student stage's query is trained; teacher keys through the kept weights
        for proj, (_, h, w) in zip(crit.query, s_info.stage_shapes):
            if h * w > 1:  # a 1×1 AT map is [1] for any input: D is 0 for every key, so no gradient
                assert proj[0].weight.grad is not None and proj[0].weight.grad.abs().sum() > 0
        assert any(proj[0].weight.grad is not None and proj[0].weight.grad.abs().sum() > 0 for proj in crit.key)
    else:
        assert not list(crit.parameters())
    # export: the student is exactly the backbone; the loss's modules are elsewhere
    assert not {id(p) for p in student.parameters()} & {id(p) for p in crit.parameters()}
    assert list(student.state_dict()) == list(build(student_arch, shape).state_dict())


def test_every_projection_is_trained_without_filtering(tiny_student, tiny_teacher):
    freeze(tiny_teacher)
    shape = (1, 8, 8)
    s_info = probe(tiny_student, tiny_student.stage_names, shape, 10)
    t_info = probe(tiny_teacher, tiny_teacher.stage_names, shape, 10)
    crit = RTKLoss(RTKOptions(k=None), s_info, t_info)
    x = torch.randn(4, *shape)
    with FeatureTaps(tiny_student, tiny_student.stage_names) as st, FeatureTaps(tiny_teacher, tiny_teacher.stage_names) as tt:
        with torch.no_grad():
            t_io = tt.run(x)
        crit(st.run(x), t_io, None).backward()
    assert len(crit.key) == 4 and len(crit.query) == 3
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crit.parameters())


def test_options_are_validated_with_clear_messages():
    with pytest.raises(PipelineError, match=r"distill\.options\.k: .*greater than or equal to 1"):
        validate_config({"distill": {"method": "rtk", "options": {"k": 0}}})
    with pytest.raises(PipelineError, match=r"distill\.options\.form: 'dot' is not allowed"):
        validate_config({"distill": {"method": "rtk", "options": {"form": "dot"}}})
    with pytest.raises(PipelineError, match=r"distill\.options\.tau: "):
        validate_config({"distill": {"method": "rtk", "options": {"tau": 1.5}}})
    with pytest.raises(PipelineError, match=r"unknown key .*did you mean 'k'"):
        validate_config({"distill": {"method": "rtk", "options": {"kk": 2}}})
    cfg = validate_config({"distill": {"method": "rtk", "options": {"form": "cosine", "k": None, "tau": 0.3}}})
    assert cfg.distill.options == {"positions": "reference", "reference_size": 32, "form": "cosine", "k": None,
                                   "tau": 0.3, "dim": 128, "cosine_temperature": 0.1}
    _, _, si, ti = tiny_pair()
    with pytest.raises(PipelineError, match=r"distill\.options\.k: 4 keys .* teacher has 3 stages"):
        RTKLoss(RTKOptions(k=4), si, ti)


def test_registered_with_afd_defaults():
    assert LOSSES["rtk"] is RTKLoss
    assert RTKLoss.defaults == {"w_ce": 1.0, "w_kd": 0.9, "w_feat": 200.0} == LOSSES["afd"].defaults


def test_a_last_batch_of_one_sample_trains(tiny_student, tiny_teacher):
    """The loader keeps a last batch of one; BatchNorm1d's batch statistics would fail on it."""
    shape = (1, 8, 8)
    crit = RTKLoss(RTKOptions(), probe(tiny_student, tiny_student.stage_names, shape, 10),
                   probe(tiny_teacher, tiny_teacher.stage_names, shape, 10)).train()
    x = torch.randn(1, *shape)
    with FeatureTaps(tiny_student, tiny_student.stage_names) as st, FeatureTaps(tiny_teacher, freeze(tiny_teacher).stage_names) as tt:
        value = crit(st.run(x), tt.run(x), None)
    assert math.isfinite(value.item())
