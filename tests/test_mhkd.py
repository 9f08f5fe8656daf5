"""MHKD: head shapes across teacher/student pairs, the loss value by hand, the teacher-head phase and
its cache, gradients, and that the exported student (state_dict and ONNX) is the bare backbone."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.distill.mhkd import MHKDLoss
from pipeline.distill.options import MHKDOptions
from pipeline.distill.trainer import DistillStep, LossWeights
from pipeline.train.supervision import freeze
from pipeline.errors import PipelineError
from pipeline.models import build_model, count_parameters
from pipeline.models.taps import FeatureTaps, ModelIO, probe

from conftest import TinyNet

SHAPE = (1, 16, 16)


def data(n=32, seed=0, separable=False):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randn(n, *SHAPE, generator=g)
    if separable:  # each class lights up its own row band
        for c in range(10):
            x[y == c, :, c : c + 6, :] += 3.0
    return DataLoader(TensorDataset(x, y), batch_size=16)


def model(arch):
    torch.manual_seed(0)
    return TinyNet((8, 16, 32, 32)) if arch == "tiny_t" else TinyNet((4, 8, 16)) if arch == "tiny_s" else build_model(arch, 10, 1)


def infos(student, teacher):
    return probe(student, student.stage_names, SHAPE, 10), probe(teacher, teacher.stage_names, SHAPE, 10)


def prepared(teacher, student, tmp_path, loader=None, **options):
    freeze(teacher)
    crit = MHKDLoss(MHKDOptions(**{"epochs": 1, **options}), *infos(student, teacher))
    taps = FeatureTaps(teacher, teacher.stage_names)
    metrics = crit.prepare_teacher(teacher, taps, loader or data(), tmp_path)
    return crit, taps, metrics


@pytest.mark.parametrize("t_arch,s_arch,options,pairs", [
    ("tiny_t", "tiny_s", {}, [("stages.0", "stages.1"), ("stages.1", "stages.2")]),  # 4 stages → 3, aligned from the end
    ("wrn_16_2", "resnet8", {}, [("layer1", "block1"), ("layer2", "block2")]),  # 32/64 channels → 16/32
    ("mobilenetv2", "shufflenetv2_0_5", {}, [("layer1", "blocks.2"), ("layer2", "blocks.4")]),
    ("resnet20", "resnet8", {"student_stages": [0, 1, 2], "teacher_stages": [0, 1, 2], "width": 8}, None),
])
def test_heads_map_each_paired_stage_to_class_logits(t_arch, s_arch, options, pairs):
    teacher, student = model(t_arch), model(s_arch)
    s_info, t_info = infos(student, teacher)
    crit = MHKDLoss(MHKDOptions(**options), s_info, t_info)
    if pairs is not None:
        assert crit.pairs == pairs
    x = torch.randn(3, *SHAPE)
    with FeatureTaps(student, student.stage_names) as s_taps, FeatureTaps(teacher, teacher.stage_names) as t_taps:
        s_io, t_io = s_taps.run(x), t_taps.run(x)
    for hs, ht, (s, t) in zip(crit.student_heads, crit.teacher_heads, crit.pairs):
        assert hs(s_io.feats[s]).shape == (3, 10) and ht(t_io.feats[t]).shape == (3, 10)
        assert hs[0].in_channels == s_io.feats[s].shape[1] and ht[0].in_channels == t_io.feats[t].shape[1]
        assert hs[0].out_channels == options.get("width", s_io.feats[s].shape[1])


def test_hand_computed_loss():
    s_info, t_info = infos(model("tiny_s"), model("tiny_t"))
    crit = MHKDLoss(MHKDOptions(beta=0.5, temperature=4.0), s_info, t_info)
    T = 4.0
    for hs, ht in zip(crit.student_heads, crit.teacher_heads):  # heads that output constant logits
        for head, bias0 in ((hs, 0.0), (ht, T * math.log(3.0))):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
            head[-1].bias.data[0] = bias0
    crit.eval()
    # p_t = softmax(b_t/T) = [3, 1, …, 1]/12, p_s uniform: KD = T²·Σ p_t ln(10·p_t); CE = ln 10
    kd = T * T * (0.25 * math.log(2.5) + 0.75 * math.log(10 / 12))
    expected = 0.5 * 2 * (kd + math.log(10))  # β · two heads
    feats = lambda shapes: {n: torch.randn(2, *s) for n, s in zip(("stages.0", "stages.1", "stages.2", "stages.3"), shapes)}  # noqa: E731
    student = ModelIO(torch.zeros(2, 10), feats(s_info.stage_shapes))
    teacher = ModelIO(torch.zeros(2, 10), feats(t_info.stage_shapes))
    assert crit(student, teacher, torch.tensor([3, 7])).item() == pytest.approx(expected, rel=1e-5)


def test_teacher_heads_are_trained_recorded_and_frozen(tmp_path):
    teacher, student = model("tiny_t"), model("tiny_s")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    crit, _, metrics = prepared(teacher, student, tmp_path, data(160, separable=True), epochs=8, lr=0.1)
    assert metrics["cached"] is False
    assert metrics["head_stages.1_train_acc"] > 0.6 and metrics["head_stages.2_train_acc"] > 0.6  # chance 0.1
    assert metrics["teacher_train_acc"] < 0.3  # the random teacher's own head: the heads learned, not it
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in crit.teacher_heads.parameters())
    assert all(p.requires_grad for p in crit.student_heads.parameters())


def test_teacher_heads_are_cached_and_reused(tmp_path):
    teacher, student = model("tiny_t"), model("tiny_s")
    first, _, m1 = prepared(teacher, student, tmp_path)
    torch.manual_seed(7)
    second, _, m2 = prepared(teacher, student, tmp_path)
    assert (m1["cached"], m2["cached"]) == (False, True)
    assert all(torch.equal(v, second.teacher_heads.state_dict()[k]) for k, v in first.teacher_heads.state_dict().items())
    _, _, m3 = prepared(teacher, student, tmp_path, hidden=16)
    assert m3["cached"] is False
    assert prepared(teacher, student, tmp_path, beta=1.0, temperature=2.0)[2]["cached"] is True  # student-side only
    assert prepared(teacher, student, tmp_path, student_stages=[1])[2]["cached"] is False  # one head, other stages


def test_gradients_reach_the_student_and_its_heads_never_the_teacher_or_its_heads(tmp_path):
    teacher, student = model("wrn_16_2"), model("resnet8")
    crit, taps, _ = prepared(teacher, student, tmp_path)
    frozen = {k: v.clone() for k, v in crit.teacher_heads.state_dict().items()}
    crit.train()
    assert not any(m.training for m in crit.teacher_heads.modules())
    weights = LossWeights.resolve(type("C", (), {"w_ce": None, "w_kd": None, "w_feat": None, "temperature": 4.0})(), MHKDLoss)
    assert (weights.w_ce, weights.w_kd, weights.w_feat) == (0.0, 1.0, 1.0)
    with FeatureTaps(student, student.stage_names) as s_taps:
        loss, _ = DistillStep(s_taps, taps, crit, weights)(torch.randn(8, *SHAPE), torch.arange(8))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in crit.teacher_heads.parameters())
    assert all(p.grad is not None for p in crit.student_heads.parameters())
    assert student.layer1[0].conv1.weight.grad.abs().sum() > 0  # the heads' gradients reach early stages
    assert all(torch.equal(v, frozen[k]) for k, v in crit.teacher_heads.state_dict().items())


def test_exported_student_is_the_backbone_alone(tmp_path):
    import onnx
    import onnxruntime as ort

    teacher, student = model("resnet20"), model("resnet8")
    crit, taps, _ = prepared(teacher, student, tmp_path)
    weights = LossWeights(w_ce=0.0, w_kd=1.0, w_feat=1.0, temperature=4.0)
    with FeatureTaps(student, student.stage_names) as s_taps:
        opt = torch.optim.SGD([p for m in (student, crit) for p in m.parameters() if p.requires_grad], lr=0.05)
        for _ in range(2):
            loss, _ = DistillStep(s_taps, taps, crit, weights)(torch.randn(8, *SHAPE), torch.arange(8))
            opt.zero_grad()
            loss.backward()
            opt.step()
    fresh = build_model("resnet8", 10, 1)
    assert {k: v.shape for k, v in student.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    assert count_parameters(student) == count_parameters(fresh)

    student.eval()
    plain = build_model("resnet8", 10, 1)  # a backbone that never met the loss, carrying the student's weights
    plain.load_state_dict(student.state_dict())
    plain.eval()
    x = torch.randn(2, *SHAPE)

    def export(m, name):
        path = tmp_path / name
        torch.onnx.export(m, (x,), str(path), dynamo=False, input_names=["x"], output_names=["logits"])
        return path, onnx.load(str(path)).graph

    path, graph = export(student, "student.onnx")
    _, plain_graph = export(plain, "plain.onnx")
    assert [o.name for o in graph.output] == ["logits"] and len(graph.input) == 1
    initializers = lambda g: sorted((tuple(t.dims), t.raw_data) for t in g.initializer)  # noqa: E731
    assert initializers(graph) == initializers(plain_graph)
    assert [n.op_type for n in graph.node] == [n.op_type for n in plain_graph.node]
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, student(x).numpy(), atol=1e-4)


def test_option_mistakes():
    s_info, t_info = infos(model("tiny_s"), model("tiny_t"))
    with pytest.raises(ValidationError, match="pair one to one"):
        MHKDOptions(student_stages=[0, 1], teacher_stages=[1])
    with pytest.raises(ValidationError, match="no repeats"):
        MHKDOptions(student_stages=[0, 0])
    with pytest.raises(ValidationError):
        MHKDOptions(beta=-1)
    with pytest.raises(PipelineError, match="teacher_stages: \\[9\\] out of range"):
        MHKDLoss(MHKDOptions(student_stages=[0], teacher_stages=[9]), s_info, t_info)
    with pytest.raises(PipelineError, match="fewer stages"):
        MHKDLoss(MHKDOptions(), t_info, s_info)  # 4-stage student, 3-stage teacher: say which stages pair
    one = probe(TinyNet((4,)), ["stages.0"], SHAPE, 10)
    with pytest.raises(PipelineError, match="no intermediate stage"):
        MHKDLoss(MHKDOptions(), one, t_info)
