"""One training loop for every stage that trains: optimiser, schedule, epochs, progress, evaluation.

The caller supplies ``step(x, y) -> (loss, logits)``; the loop owns everything else, so the
teacher, distill and QAT stages differ only in what a step computes. Where the step runs (device,
precision, how many processes) comes from ``pipeline.train.distributed.current()``: under
torchrun the modules train as one DistributedDataParallel module, each rank on its shard of the
data, and evaluation gathers every rank's predictions so it equals one process's exactly.
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.train.data import Augment, Loader, make_loader, replay_epoch, set_epoch, shard_record, view_seed
from pipeline.train.distributed import Placement, all_gather, all_sum, current

EVAL_BATCH = 256
_POSITION: ContextVar[tuple[int, int] | None] = ContextVar("batch_in_cycle", default=None)


def batch_in_cycle() -> tuple[int, int] | None:
    """(view, batch number) of the step running now where ``fit`` replays views; None otherwise.
    Two steps with the same position get the same images, augmented the same way."""
    return _POSITION.get()


@contextlib.contextmanager
def _at(position: tuple[int, int] | None) -> Iterator[None]:
    token = _POSITION.set(position)
    try:
        yield
    finally:
        _POSITION.reset(token)


def make_optimizer(params: Iterable[nn.Parameter], cfg) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg, steps_per_epoch: int):
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

    def __init__(self, modules: list[nn.Module], step: Callable):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.step = step

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return self.step(x, y)


def _data_parallel(modules: list[nn.Module], step: Callable, place: Placement) -> Callable:
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


def fit(
    *,
    modules: list[nn.Module],
    step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    train: Dataset,
    cfg,
    batch_size: int,
    augment: Augment | None,
    seed: int,
    desc: str,
    evaluate_fn: Callable[[], float] | None = None,
    on_epoch_start: Callable[[int, torch.optim.Optimizer], None] | None = None,
    precision: str | None = None,
    views: int | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> dict:
    """Train the parameters of ``modules`` with ``step``; returns per-epoch history and timings.

    ``modules`` must already be on the placement's device. ``batch_size`` is the global batch.
    ``augment`` (in-memory data) runs per batch on the CPU with a generator seeded from ``seed``
    (+ the rank). ``precision`` overrides ``train.precision`` (a stage that must stay fp32).
    ``evaluate_fn`` (validation accuracy) runs after every epoch when given; ``on_epoch_start(epoch, optimizer)``
    may change the model's mode or scale the learning rate (the schedulers continue from the scaled
    rate). A non-finite loss stops training with a clear error instead of writing a NaN checkpoint.
    ``views`` (fewer than the epochs): epoch e replays epoch e mod ``views`` (same shards, order and
    augmentation), and each step runs at ``batch_in_cycle()`` = (view, batch), so a step may reuse
    what it computed for that position before (distill's ``teacher_reuse``). ``on_epoch_end(row)`` sees each
    epoch's history row (the student search's pruner; it may raise to stop training).
    """
    place = current()
    precision = precision or place.precision
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + place.rank)  # rank 0 draws what one process draws
    data = make_loader(train, batch_size, shuffle=True, seed=seed)
    params = [p for m in modules for p in m.parameters()]
    run_step = _data_parallel(modules, step, place)
    opt = make_optimizer(params, cfg)
    sched = make_scheduler(opt, cfg, len(data))
    scaler = place.grad_scaler(precision)
    history: list[dict] = []
    shards: dict = {}
    step_seconds, steps = 0.0, 0
    replay = views is not None and views < cfg.epochs
    for epoch in range(cfg.epochs):
        view = epoch % views if replay else epoch
        if replay:
            replay_epoch(data, view, seed)
            gen.manual_seed(view_seed(seed, view, place.rank))
        else:
            set_epoch(data, epoch)
        if epoch == 0:
            shards = shard_record(data)
        if on_epoch_start:
            on_epoch_start(epoch, opt)
        for m in modules:
            m.train()
        t0, seen, correct, total_loss = time.perf_counter(), 0, 0, 0.0
        bar = tqdm(data, desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=None, dynamic_ncols=True)
        for batch, (xb, yb) in enumerate(bar):
            if augment is not None:
                xb = augment(xb, gen)
            xb, yb = xb.to(place.device, non_blocking=True), yb.to(place.device, non_blocking=True)
            t_step = time.perf_counter()
            with place.autocast(precision), _at((view, batch) if replay else None):
                loss, logits = run_step(xb, yb)
            if not torch.isfinite(loss):
                raise PipelineError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            seen += len(yb)
            correct += int((logits.detach().argmax(1) == yb).sum())
            total_loss += float(loss.detach()) * len(yb)  # waits for the device: the step time below is real
            step_seconds += time.perf_counter() - t_step
            steps += 1
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        seen, correct, total_loss = all_sum([seen, correct, total_loss])
        row = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1), "seconds": time.perf_counter() - t0}
        if evaluate_fn is not None:
            row["val_acc"] = evaluate_fn()
        history.append(row)
        tqdm.write(f"  {desc} epoch {row['epoch']}/{cfg.epochs}: loss {row['loss']:.4f} train {row['train_acc']:.3f}"
                   + (f" val {row['val_acc']:.3f}" if "val_acc" in row else "") + f" ({row['seconds']:.1f}s)")
        if on_epoch_end is not None:
            on_epoch_end(row)
    if place.sync_bn and place.distributed:
        for m in modules:
            revert_sync_batchnorm(m)
    epoch_s = [r["seconds"] for r in history]
    return {"history": history, "seconds_per_epoch": float(np.mean(epoch_s)) if epoch_s else 0.0,
            "ms_per_step": 1000.0 * step_seconds / max(steps, 1), "shards": shards}
