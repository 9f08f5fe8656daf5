"""The position normalisation of the attention-map losses (AT, AFD, RTK, HMAT; ``at.py``): hand-computed
values in both modes, the same loss for the same maps at any input size, gradients in both modes."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.distill import LOSSES
from pipeline.distill.at import ATLoss, positions_scale
from pipeline.distill.options import ATOptions, PositionsOptions
from pipeline.models.taps import ModelInfo, ModelIO, probe

from conftest import TinyNet

MAP_LOSSES = ["at", "afd", "rtk", "hmat"]


def info(side: int, feats: list[torch.Tensor]) -> ModelInfo:
    names = tuple(f"s{i}" for i in range(len(feats)))
    return ModelInfo(names, tuple(tuple(f.shape[1:]) for f in feats), 10, (1, side, side))


def io(feats: list[torch.Tensor]) -> ModelIO:
    return ModelIO(torch.zeros(feats[0].shape[0], 10), {f"s{i}": f for i, f in enumerate(feats)})


def test_scale_hand_computed():
    ref, mean = PositionsOptions(), PositionsOptions(positions="mean")
    assert positions_scale(ref, info(16, [torch.zeros(1, 1, 1, 1)])) == 0.25  # 16²/32²
    assert positions_scale(ref, info(32, [torch.zeros(1, 1, 1, 1)])) == 1.0  # the published setting
    assert positions_scale(ref, info(64, [torch.zeros(1, 1, 1, 1)])) == 4.0
    assert positions_scale(PositionsOptions(reference_size=16), info(16, [torch.zeros(1, 1, 1, 1)])) == 1.0
    assert positions_scale(mean, info(16, [torch.zeros(1, 1, 1, 1)])) == 1.0
    assert ATOptions().positions == "reference" and all(
        LOSSES[n].Options().positions == "reference" and LOSSES[n].Options().reference_size == 32 for n in MAP_LOSSES)


def test_at_hand_computed_in_both_modes():
    # one stage of 1×2 positions: energy [5, 0] → a_s = [1, 0]; a_t = [1/√2, 1/√2]
    fs = torch.zeros(1, 2, 1, 2)
    fs[0, :, 0, 0] = torch.tensor([1.0, 2.0])
    ft = torch.ones(1, 1, 1, 2)
    r = 2**-0.5
    published = ((1 - r) ** 2 + r**2) / 2  # mean over the 2 positions
    for side, scale in ((16, 0.25), (32, 1.0), (8, 1 / 16)):
        ref = ATLoss(ATOptions(), info(side, [fs]), info(side, [ft]))
        mean = ATLoss(ATOptions(positions="mean"), info(side, [fs]), info(side, [ft]))
        assert ref(io([fs]), io([ft]), None).item() == pytest.approx(scale * published, rel=1e-6)
        assert mean(io([fs]), io([ft]), None).item() == pytest.approx(published, rel=1e-6)


def upsampled(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every map at twice the side, each position repeated 2×2: the same image content at 4× the positions."""
    return [F.interpolate(f, scale_factor=2, mode="nearest") for f in feats]


def pair_at(name: str, side: int, s_feats, t_feats, **options):
    cls = LOSSES[name]
    return cls(cls.Options(**options), info(side, s_feats), info(side, t_feats)).eval()


@pytest.mark.parametrize("name", MAP_LOSSES)
def test_same_maps_give_the_same_loss_at_any_input_size(name):
    torch.manual_seed(0)
    # maps of 8×8, 4×4, 2×2 positions, each constant on blocks of a 2×2 grid, so pooling any map to
    # another's size loses nothing and the 2× upsampled pair holds exactly the same content
    blocky = lambda c, side: F.interpolate(torch.rand(3, c, 2, 2), size=(side, side), mode="nearest")  # noqa: E731
    s = [blocky(4, 8), blocky(8, 4), blocky(16, 2)]
    t = [blocky(8, 8), blocky(16, 4), blocky(32, 2), blocky(32, 2)]
    s2, t2 = upsampled(s), upsampled(t)
    small = pair_at(name, 8, s, t)
    big = pair_at(name, 16, s2, t2)
    big.load_state_dict(small.state_dict())  # the same projections/adapters (they see channels only)
    with torch.no_grad():
        at_8, at_16 = small(io(s), io(t), None), big(io(s2), io(t2), None)
    assert at_8.item() > 0
    assert at_16.item() == pytest.approx(at_8.item(), rel=1e-5)
    if name == "hmat":  # its position and channel terms are size-free by construction; the AT term was not
        mean_8, mean_16 = (pair_at(name, side, a, b, positions="mean", position=False, channel=False)
                           for side, a, b in ((8, s, t), (16, s2, t2)))
    else:
        mean_8, mean_16 = pair_at(name, 8, s, t, positions="mean"), pair_at(name, 16, s2, t2, positions="mean")
        mean_16.load_state_dict(mean_8.state_dict())
    with torch.no_grad():
        published_8, published_16 = mean_8(io(s), io(t), None).item(), mean_16(io(s2), io(t2), None).item()
    # the published mean: 4× the positions, a quarter of the loss for the same maps
    assert published_16 == pytest.approx(published_8 / 4, rel=1e-5)


@pytest.mark.parametrize("positions", ["reference", "mean"])
@pytest.mark.parametrize("name", MAP_LOSSES)
def test_gradients_reach_the_student_in_both_modes(name, positions, tiny_student, tiny_teacher):
    shape = (1, 16, 16)
    cls = LOSSES[name]
    crit = cls(cls.Options(positions=positions), probe(tiny_student, tiny_student.stage_names, shape, 10),
               probe(tiny_teacher, tiny_teacher.stage_names, shape, 10))
    from pipeline.models.taps import FeatureTaps

    x = torch.randn(4, *shape)
    with FeatureTaps(tiny_student, tiny_student.stage_names) as st, FeatureTaps(tiny_teacher, tiny_teacher.stage_names) as tt:
        with torch.no_grad():
            t_io = tt.run(x)
        loss = crit(st.run(x), t_io, torch.arange(4))
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_student.stages.parameters())
    assert sum(p.numel() for p in tiny_student.parameters()) == sum(p.numel() for p in TinyNet((4, 8, 16)).parameters())
