"""One training loop for every stage that trains: optimiser, schedule, epochs, progress, evaluation.

The caller supplies ``step(x, y, position) -> (loss, logits)`` and a ``FitSpec`` (train/spec.py); the
loop owns everything else, so the teacher, distill and QAT stages and the teacher-side phases differ
only in what a step computes and in their spec. Where the step runs (device, precision, how many
processes) comes from ``pipeline.train.distributed.current()``: under torchrun the modules train as
one DistributedDataParallel module, each rank on its shard of the data, and evaluation gathers every
rank's predictions so it equals one process's exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.train.data import Loader, make_loader, replay_epoch, set_epoch, shard_record, view_seed
from pipeline.train.distributed import Placement, all_gather, all_sum, current
from pipeline.train.spec import FitSpec, Position, Schedule

EVAL_BATCH = 256
Step = Callable[[torch.Tensor, torch.Tensor, Position | None], tuple[torch.Tensor, torch.Tensor]]  # (x, y, position) -> (loss, logits)


def make_optimizer(params: Iterable[nn.Parameter], cfg: Schedule) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: Schedule, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, [m * steps_per_epoch for m in cfg.milestones], gamma=cfg.gamma)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    return tensor.device if tensor is not None else current().device


@torch.no_grad()
def predict_with_labels(model: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset,
                        batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for a whole dataset, in order (model in eval mode is the caller's job).

    The batches are the ones one process would run; under torchrun rank r runs batches r, r+N, …
    and the logits are gathered, so no image is dropped or counted twice and every logit is
    computed exactly as in one process.
    """
    place = current()
    n = len(dataset)
    batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    mine = list(range(place.rank, len(batches), place.world_size))
    loader = Loader(dataset, batch_sampler=[batches[b] for b in mine], num_workers=getattr(dataset, "workers", 0),
                    generator=torch.Generator())  # not the global RNG: evaluating must not change training's draws
    device = device_of(model) if isinstance(model, nn.Module) else place.device
    done = {b: (model(x.to(device)).float().cpu(), y) for b, (x, y) in zip(mine, loader)}
    merged = {b: out for part in all_gather(done) for b, out in part.items()}
    if not batches:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    logits = torch.cat([merged[b][0] for b in range(len(batches))]).numpy()
    labels = torch.cat([torch.as_tensor(merged[b][1]) for b in range(len(batches))]).numpy()
    return logits, labels


def predict(model: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Logits for a whole dataset, in order (see ``predict_with_labels``)."""
    return predict_with_labels(model, dataset, batch_size)[0]


def evaluate(model: nn.Module, dataset: Dataset) -> float:
    """Top-1 accuracy on ``dataset`` in eval mode and fp32, the same on every rank."""
    was = model.training
    model.eval()
    logits, labels = predict_with_labels(model, dataset)
    model.train(was)
    return float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")


class _Trainable(nn.Module):
    """The modules a step trains, as one module whose forward is the step: what DDP wraps."""

    def __init__(self, modules: list[nn.Module], step: Step):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.step = step

    def forward(self, x: torch.Tensor, y: torch.Tensor, position: Position | None):
        return self.step(x, y, position)


def _data_parallel(modules: list[nn.Module], step: Step, place: Placement) -> Step:
    """The step itself in one process; under torchrun, the step inside DistributedDataParallel.

    ``static_graph``: a step uses the same parameters every time, though not always all of them
    (a loss's own modules are idle at ``w_feat: 0``); DDP learns which in the first step.
    """
    if not place.distributed:
        return step
    from torch.nn.parallel import DistributedDataParallel

    if place.sync_bn:
        for m in modules:
            nn.SyncBatchNorm.convert_sync_batchnorm(m)
    return DistributedDataParallel(_Trainable(modules, step), device_ids=[place.device] if place.device.type == "cuda" else None,
                                   static_graph=True)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm → BatchNorm2d with the same state, in place: what is saved and exported is plain BN."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats,
                                device=child.weight.device if child.affine else None)
            bn.load_state_dict(child.state_dict())
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            revert_sync_batchnorm(child)
    return module


@dataclass
class _Optimiser:
    """What follows a step's loss: zeroed gradients, the (loss-scaled) backward, the update, the schedule."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def update(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()


@dataclass
class _Totals:
    """An epoch's running sums on this rank, and the time spent inside steps over the whole run."""

    seen: int = 0
    correct: int = 0
    loss: float = 0.0
    step_seconds: float = 0.0
    steps: int = 0


def _epoch(data: Loader, step: Step, optimiser: _Optimiser, spec: FitSpec, gen: torch.Generator, precision: str,
           epoch: int, view: int | None, totals: _Totals) -> dict:
    """One pass over ``data`` (``view``: the replayed view it is, None when nothing replays); returns
    its history row, summed over the ranks."""
    place = current()
    t0 = time.perf_counter()
    totals.seen, totals.correct, totals.loss = 0, 0, 0.0
    bar = tqdm(data, desc=f"{spec.desc} {epoch + 1}/{spec.schedule.epochs}", leave=False, disable=None, dynamic_ncols=True)
    for batch, (xb, yb) in enumerate(bar):
        if spec.augment is not None:
            xb = spec.augment(xb, gen)
        xb, yb = xb.to(place.device, non_blocking=True), yb.to(place.device, non_blocking=True)
        t_step = time.perf_counter()
        with place.autocast(precision):
            loss, logits = step(xb, yb, None if view is None else (view, batch))
        if not torch.isfinite(loss):
            raise PipelineError(f"{spec.desc}: loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate")
        optimiser.update(loss)
        totals.seen += len(yb)
        totals.correct += int((logits.detach().argmax(1) == yb).sum())
        totals.loss += float(loss.detach()) * len(yb)  # waits for the device: the step time below is real
        totals.step_seconds += time.perf_counter() - t_step
        totals.steps += 1
        bar.set_postfix(loss=f"{totals.loss / totals.seen:.3f}", acc=f"{totals.correct / totals.seen:.3f}")
    seen, correct, total_loss = all_sum([totals.seen, totals.correct, totals.loss])
    return {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
            "seconds": time.perf_counter() - t0}


def fit(
    *,
    modules: list[nn.Module],
    step: Step,
    train: Dataset,
    spec: FitSpec,
    evaluate_fn: Callable[[], float] | None = None,
    on_epoch_start: Callable[[int, torch.optim.Optimizer], None] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> dict:
    """Train the parameters of ``modules`` with ``step`` as ``spec`` says; returns per-epoch history and timings.

    ``modules`` must already be on the placement's device. ``spec.augment`` (in-memory data) runs per
    batch on the CPU with a generator seeded from ``spec.seed`` (+ the rank). ``evaluate_fn``
    (validation accuracy) runs after every epoch when given; ``on_epoch_start(epoch, optimizer)`` may
    change the model's mode or scale the learning rate (the schedulers continue from the scaled rate).
    A non-finite loss stops training with a clear error instead of writing a NaN checkpoint.
    With ``spec.views`` (fewer than the epochs) epoch e replays epoch e mod views (same shards, order
    and augmentation) and each step is called with its position (view, batch), else with None: two
    steps at one position get the same images, augmented the same way. ``on_epoch_end(row)`` sees
    each epoch's history row (the student search's pruner; it may raise to stop training).
    Training leaves no gradients behind on ``modules``.
    """
    place = current()
    precision = spec.precision or place.precision
    if spec.seeds_global_rng:
        torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed + place.rank)  # rank 0 draws what one process draws
    data = make_loader(train, spec.batch_size, shuffle=True, seed=spec.seed)
    params = [p for m in modules for p in m.parameters()]
    run_step = _data_parallel(modules, step, place)
    opt = make_optimizer(params, spec.schedule)
    optimiser = _Optimiser(opt, make_scheduler(opt, spec.schedule, len(data)), place.grad_scaler(precision))
    history: list[dict] = []
    shards: dict = {}
    totals = _Totals()
    epochs = spec.schedule.epochs
    replay = spec.views is not None and spec.views < epochs
    for epoch in range(epochs):
        view = epoch % spec.views if replay else None
        if view is not None:
            replay_epoch(data, view, spec.seed)
            gen.manual_seed(view_seed(spec.seed, view, place.rank))
        else:
            set_epoch(data, epoch)
        if epoch == 0:
            shards = shard_record(data)
        if on_epoch_start:
            on_epoch_start(epoch, opt)
        for m in modules:
            m.train()
        row = _epoch(data, run_step, optimiser, spec, gen, precision, epoch, view, totals)
        if evaluate_fn is not None:
            row["val_acc"] = evaluate_fn()
        history.append(row)
        if spec.epoch_lines:
            tqdm.write(f"  {spec.desc} epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f} train {row['train_acc']:.3f}"
                       + (f" val {row['val_acc']:.3f}" if "val_acc" in row else "") + f" ({row['seconds']:.1f}s)")
        if on_epoch_end is not None:
            on_epoch_end(row)
    opt.zero_grad(set_to_none=True)  # no stale gradients on modules that are frozen or saved next
    if place.sync_bn and place.distributed:
        for m in modules:
            revert_sync_batchnorm(m)
    epoch_s = [r["seconds"] for r in history]
    return {"history": history, "seconds_per_epoch": float(np.mean(epoch_s)) if epoch_s else 0.0,
            "ms_per_step": 1000.0 * totals.step_seconds / max(totals.steps, 1), "shards": shards}
