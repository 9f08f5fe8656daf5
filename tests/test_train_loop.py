import numpy as np
import torch
from torch import nn

from pipeline.data import ArrayDataset
from pipeline.errors import PipelineError
from pipeline.train.data import Augment
from pipeline.train.loop import evaluate, fit
from pipeline.train.spec import FitSpec, Schedule


def test_crop_shifts_content_within_padding_and_pads_with_black():
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).repeat(64, 1, 1, 1)
    out = Augment(["crop"], torch.tensor([-9.0]))(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    shifts = set()
    for img in out[:, 0]:
        inside = img[img != -9.0]
        # every kept pixel is from the original, in the original order (a pure translation)
        assert torch.all(inside[1:] > inside[:-1]) or inside.numel() <= 1
        shifts.add(int(img[img != -9.0][0].item()) if inside.numel() else -1)
    assert len(shifts) > 3  # different random offsets per image


def test_flip_mirrors_about_half_the_batch():
    x = torch.arange(4, dtype=torch.float32).view(1, 1, 1, 4).repeat(200, 1, 1, 1)
    out = Augment(["flip"], torch.tensor([0.0]))(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).float().mean().item()
    assert 0.35 < flipped < 0.65
    assert torch.equal(out[out[:, 0, 0, 0] == 3][0, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))


def test_fit_learns_a_separable_problem_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1, 2, 2)).astype(np.float32)
    y = (x.reshape(256, -1).sum(1) > 0).astype(np.int64)
    data = ArrayDataset(torch.from_numpy(x), torch.from_numpy(y))
    spec = FitSpec(Schedule(epochs=5, lr=0.5, optimizer="sgd", momentum=0.9, weight_decay=0.0, schedule="cosine"),
                   batch_size=32, seed=0, desc="t")

    def train_once():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        result = fit(modules=[model], step=lambda a, b, _: (nn.functional.cross_entropy(model(a), b), model(a)),
                     train=data, spec=spec)
        return model, result

    model, result = train_once()
    assert evaluate(model, data) > 0.95 and len(result["history"]) == 5
    again, _ = train_once()
    assert torch.equal(model[1].weight, again[1].weight)


def test_non_finite_loss_stops_with_a_clear_error():
    spec = FitSpec(Schedule(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0, schedule="constant"),
                   batch_size=4, seed=0, desc="boom")
    model = nn.Linear(1, 2)
    data = ArrayDataset(torch.ones(4, 1), torch.zeros(4, dtype=torch.long))
    try:
        fit(modules=[model], step=lambda a, b, _: (model(a).sum() * float("nan"), model(a)), train=data, spec=spec)
    except PipelineError as exc:
        assert "boom: loss became nan" in str(exc)
    else:
        raise AssertionError("expected PipelineError")
