"""Expressive teacher / ICC: the class-correlation matrix by hand, its edge cases, both sides' gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.distill.icc import ICCLoss, class_correlation, icc_teacher_term, icc_teacher_weight
from pipeline.distill.options import ICCOptions
from pipeline.distill.trainer import DistillStep, LossWeights
from pipeline.train.supervision import freeze
from pipeline.models.taps import FeatureTaps, ModelIO, probe
from pipeline.teacher.stage import classifier_weight

from conftest import TinyNet

SHAPE = (1, 8, 8)
LN3 = math.log(3.0)

# two samples, two classes, T = 1: P = [[3/4, 1/4], [1/2, 1/2]]
# columns (3/4, 1/2) and (1/4, 1/2): cos = (3/16 + 1/4) / (√(13/16)·√(5/16)) = 7/√65
LOGITS = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
C01 = 7 / math.sqrt(65)


def test_class_correlation_hand_computed():
    c = class_correlation(LOGITS, 1.0)
    assert torch.allclose(c, torch.tensor([[1.0, C01], [C01, 1.0]]), atol=1e-6)
    assert torch.allclose(class_correlation(2 * LOGITS, 2.0), c, atol=1e-6)  # T divides the logits


def test_student_loss_hand_computed():
    crit = ICCLoss(ICCOptions(lambda_s=3.0, temperature=1.0), None, None)
    uniform = torch.zeros(2, 2)  # every column (1/2, 1/2): C_s is all ones
    value = crit(ModelIO(uniform), ModelIO(LOGITS), None)
    assert value.item() == pytest.approx(3.0 * 2 * (1 - C01) ** 2 / 4, rel=1e-5)


def test_teacher_term_hand_computed():
    w = torch.eye(2)  # orthogonal prototypes: S = softmax_row(I) = [[σ(1), 1 − σ(1)], ...]
    q = 1 / (1 + math.exp(-1))
    expected = (2 * (1 - q) ** 2 + 2 * (C01 - (1 - q)) ** 2) / 4
    assert icc_teacher_term(LOGITS, w, 1.0).item() == pytest.approx(expected, rel=1e-5)
    # S is detached: the term reaches the weights only through the logits
    w.requires_grad_(True)
    assert not icc_teacher_term(LOGITS, w, 1.0).requires_grad


def test_well_defined_for_one_sample_and_absent_classes():
    # one sample: each column is one positive number, so C is all ones
    one = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
    c = class_correlation(one, 4.0)
    assert torch.allclose(c, torch.ones(3, 3), atol=1e-6)
    # class 2 absent: its probability underflows to exactly 0 for every sample (a zero column)
    z = torch.tensor([[1.0, 0.0, -1e4], [0.0, 2.0, -1e4]], requires_grad=True)
    assert (F.softmax(z, dim=1)[:, 2] == 0).all()
    c = class_correlation(z, 1.0)
    assert torch.isfinite(c).all() and torch.allclose(c[2], torch.zeros(3)) and c[0, 0].item() == pytest.approx(1.0)
    for logits in (one, z):
        crit = ICCLoss(ICCOptions(temperature=1.0), None, None)
        loss = crit(ModelIO(logits), ModelIO(torch.zeros_like(logits)), None) + icc_teacher_term(logits, torch.randn(logits.shape[1], 4), 1.0)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_zero_when_student_equals_teacher():
    z = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    crit = ICCLoss(ICCOptions(), None, None)
    assert crit(ModelIO(z), ModelIO(z.clone()), None).item() == pytest.approx(0.0, abs=1e-10)
    assert crit(ModelIO(z), ModelIO(z.flip(1)), None).item() > 1e-4  # and it does see a difference


def test_distill_stage_gradients_reach_only_the_student(tiny_student, tiny_teacher):
    freeze(tiny_teacher)
    crit = ICCLoss(ICCOptions(), probe(tiny_student, tiny_student.stage_names, SHAPE, 10), probe(tiny_teacher, tiny_teacher.stage_names, SHAPE, 10))
    assert not list(crit.parameters())
    # the ICC term alone (no CE, no KD): it must still move the student
    step = DistillStep(FeatureTaps(tiny_student, []), FeatureTaps(tiny_teacher, []), crit, LossWeights(0.0, 0.0, 1.0, 4.0))
    loss, _ = step(torch.randn(8, *SHAPE), torch.arange(8))
    assert loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in tiny_teacher.parameters())
    assert tiny_student.fc.weight.grad.abs().sum() > 0 and tiny_student.stages[0][0].weight.grad.abs().sum() > 0


def test_teacher_stage_gradients_reach_the_teacher():
    torch.manual_seed(0)
    teacher = TinyNet((8, 16, 32, 32))
    w = classifier_weight(teacher)
    assert w is teacher.fc.weight and w.shape == (10, 32)
    logits = teacher(torch.randn(8, *SHAPE))
    icc_teacher_term(logits, w, 4.0).backward()  # the regulariser alone
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in teacher.parameters())


def test_teacher_weight_warms_up_linearly():
    assert [icc_teacher_weight(0.8, 4, e) for e in range(6)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 0.8])
    assert [icc_teacher_weight(0.8, 0, e) for e in range(3)] == [0.8, 0.8, 0.8]


def test_a_teacher_still_warming_up_trains_as_a_plain_teacher(tiny_recipe):
    """λ_t is 0 in the first warm-up epoch (half of one epoch rounds up to one), so a one-epoch teacher
    with a warm-up equals the plain one; without it the regulariser changes the teacher."""
    from pipeline.config import load_config
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.run import run_pipeline, stage_dir

    def teacher_weights(**overrides):
        cfg = load_config(tiny_recipe, {"teacher.epochs": 1, **overrides})
        run_pipeline(cfg, until="teacher")
        return load_checkpoint(stage_dir(cfg, "teacher") / "teacher.pt")[0].state_dict()

    plain = teacher_weights()
    warming = teacher_weights(**{"teacher.regularizer": "icc", "teacher.icc.lambda_t": 10.0, "teacher.icc.warmup_fraction": 0.5})
    regularised = teacher_weights(**{"teacher.regularizer": "icc", "teacher.icc.lambda_t": 10.0})
    assert all(torch.equal(plain[k], warming[k]) for k in plain)
    assert not all(torch.equal(plain[k], regularised[k]) for k in plain)
