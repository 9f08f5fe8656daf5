"""The frozen teacher's logits reused over replayed views (issue 17, ``distill.teacher_reuse``).

Epoch e replays epoch e mod N: the same shards, order and augmentation, in memory and streamed
from files (with a worker); a reused logit is exactly what the teacher gives for that batch; the
distill stage runs the teacher on the first pass over each view and says why where it cannot reuse."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.config import load_config, validate_config
from pipeline.data import ArrayDataset, split_dataset
from pipeline.distill import LOSSES
from pipeline.distill.trainer import LossWeights, ReusedTeacherLogits, reused_teacher
from pipeline.errors import PipelineError
from pipeline.run import run_pipeline, stage_dir
from pipeline.train.data import Augment
from pipeline.train.loop import fit
from pipeline.train.spec import FitSpec, Schedule
from tests.test_image_folder import make_folder, recipe

def spec(epochs: int, batch: int, augment, seed: int, views: int | None) -> FitSpec:
    schedule = Schedule(epochs=epochs, lr=0.01, optimizer="sgd", momentum=0.0, weight_decay=0.0, schedule="constant")
    return FitSpec(schedule, batch_size=batch, seed=seed, desc="t", augment=augment, views=views)


def epochs_seen(train, epochs: int, views: int | None, augment=None, batch: int = 16):
    """Every batch (images, labels, position) ``fit`` hands the step, split into epochs."""
    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    seen: list[tuple] = []

    def step(x, y, position):
        seen.append((x.clone(), y.clone(), position))
        logits = model(x)
        return nn.functional.cross_entropy(logits, y), logits

    fit(modules=[model], step=step, train=train, spec=spec(epochs, batch, augment, 5, views))
    n = len(seen) // epochs
    return [seen[i * n : (i + 1) * n] for i in range(epochs)]


def same(a, b) -> bool:
    return all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1, _), (x2, y2, _) in zip(a, b, strict=True))


def test_in_memory_epochs_replay_their_view_order_and_augmentation():
    x = torch.randn(40, 1, 8, 8)
    data = ArrayDataset(x, torch.arange(40) % 3)
    augment = Augment(["crop", "flip"], torch.tensor([-1.0]))
    e = epochs_seen(data, 4, views=2, augment=augment)
    assert same(e[2], e[0]) and same(e[3], e[1]) and not same(e[1], e[0])
    assert [p for *_, p in e[0]] == [(0, 0), (0, 1), (0, 2)] and [p for *_, p in e[3]] == [(1, 0), (1, 1), (1, 2)]
    fresh = epochs_seen(data, 3, views=None, augment=augment)
    assert same(fresh[0], e[0])  # view 0 is what an epoch 0 without views draws
    assert not same(fresh[2], fresh[0]) and all(p is None for *_, p in fresh[2])
    # as many views as epochs: nothing replays, no positions
    assert all(p is None for *_, p in epochs_seen(data, 2, views=2, augment=augment)[1])


def test_streamed_epochs_replay_with_a_persistent_worker(tmp_path):
    make_folder(tmp_path / "imgs", n_train=8)
    cfg = recipe(tmp_path, augment=["crop", "flip"], image_size=24, workers=1)
    run_pipeline(cfg, until="data")
    ds = split_dataset(stage_dir(cfg, "data"), "train", augment=["crop", "flip"], workers=1)
    e = epochs_seen(ds, 3, views=2, batch=4)
    assert same(e[2], e[0]) and not same(e[1], e[0])


def test_reused_logits_are_the_teachers_and_it_runs_for_two_views_only():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval().requires_grad_(False)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    reuse, calls = ReusedTeacherLogits(), []
    data = ArrayDataset(torch.randn(40, 1, 8, 8), torch.arange(40) % 3)

    def step(x, y, position):
        fresh = teacher(x)
        got = reuse(lambda: (calls.append(position), teacher(x))[1], position)
        assert torch.equal(got, fresh)
        logits = student(x)
        return nn.functional.kl_div(logits.log_softmax(1), got.softmax(1), reduction="batchmean"), logits

    fit(modules=[student], step=step, train=data, spec=spec(5, 16, Augment(["crop", "flip"], torch.tensor([-1.0])), 0, views=2))
    assert calls == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert reuse.record() == {"teacher_batches_computed": 6, "teacher_batches_reused": 9}


def test_reuse_is_for_logit_methods_with_replayed_epochs_within_memory():
    cfg = validate_config({"distill": {"epochs": 8}}).distill
    kd = LossWeights.resolve(cfg, LOSSES["kd"])
    assert reused_teacher(cfg, LOSSES["kd"], kd, 8000, 10) == (2, {"teacher_views": 2, "teacher_reuse": 4})
    assert reused_teacher(validate_config({"distill": {"epochs": 25}}).distill, LOSSES["kd"], kd, 8000, 10)[0] == 7
    views, why = reused_teacher(cfg, LOSSES["at"], LossWeights.resolve(cfg, LOSSES["at"]), 8000, 10)
    assert views is None and why["teacher_reuse_not_used"].startswith("at compares intermediate features")
    views, why = reused_teacher(cfg, LOSSES["kd"], kd, 1_300_000, 1000)
    assert views is None and "would take 9.7 GiB per process" in why["teacher_reuse_not_used"]
    assert "raise distill.teacher_reuse" in why["teacher_reuse_not_used"]
    for distill in ({"epochs": 1}, {"epochs": 8, "teacher_reuse": 1}):  # nothing to replay
        assert reused_teacher(validate_config({"distill": distill}).distill, LOSSES["kd"], kd, 8000, 10) == (None, {"teacher_views": None})
    alone = validate_config({"distill": {"method": "none", "epochs": 8}}).distill
    assert reused_teacher(alone, LOSSES["none"], LossWeights.resolve(alone, LOSSES["none"]), 8000, 10) == (None, {"teacher_views": None})


def test_zero_reuse_is_one_line():
    with pytest.raises(PipelineError, match="distill.teacher_reuse") as err:
        validate_config({"distill": {"teacher_reuse": 0}}, source="x.yaml")
    assert "\n" not in str(err.value)


def test_distill_stage_runs_the_teacher_for_two_views_and_records_it(tiny_recipe):
    cfg = load_config(tiny_recipe)
    raw = cfg.model_dump(mode="json")
    raw["distill"].update(epochs=3, teacher_reuse=2)  # 2 views: the third epoch replays the first
    cfg = validate_config(raw)
    m = run_pipeline(cfg, until="distill")["distill"].metrics
    batches = 300 // 64 + 1
    assert m["teacher_views"] == 2 and m["teacher_reuse"] == 2
    assert m["seeds"][0]["teacher_batches_computed"] == 2 * batches and m["seeds"][0]["teacher_batches_reused"] == batches
    raw["distill"].update(method="at", w_ce=None, w_kd=None, w_feat=None)
    m = run_pipeline(validate_config(raw), until="distill")["distill"].metrics
    assert m["teacher_views"] is None and "teacher_batches_computed" not in m["seeds"][0]
    assert m["teacher_reuse_not_used"].startswith("at compares intermediate features")
