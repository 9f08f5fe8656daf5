"""One training loop for every stage that trains: optimiser, schedule, epochs, progress, evaluation.

The caller supplies ``step(x, y) -> (loss, logits)``; the loop owns everything else, so the
teacher, distill and QAT stages differ only in what a step computes.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from pipeline.errors import PipelineError


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


class Augment:
    """Random crop with zero-pixel padding (size/8, 4 px at 32×32) and horizontal flip, on normalised tensors."""

    def __init__(self, kinds: list[str], pad_value: torch.Tensor):
        self.crop = "crop" in kinds
        self.flip = "flip" in kinds
        self.pad_value = pad_value.view(1, -1, 1, 1)  # the normalised value of a black pixel

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.crop:
            pad = max(1, h // 8)
            padded = self.pad_value.expand(b, c, h + 2 * pad, w + 2 * pad).clone()
            padded[:, :, pad : pad + h, pad : pad + w] = x
            dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
            dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
            rows = (dy.view(b, 1) + torch.arange(h)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
            x = padded.gather(2, rows)
            cols = (dx.view(b, 1) + torch.arange(w)).view(b, 1, 1, w).expand(b, c, h, w)
            x = x.gather(3, cols)
        if self.flip:
            mask = torch.rand(b, generator=gen) < 0.5
            x = torch.where(mask.view(b, 1, 1, 1), x.flip(3), x)
        return x


def loader(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=False)


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for a whole array, in order (model in eval mode is the caller's job)."""
    out = [model(torch.from_numpy(x[i : i + batch_size])).float() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    was = model.training
    model.eval()
    acc = float((predict(model, x).argmax(1) == y).mean()) if len(y) else float("nan")
    model.train(was)
    return acc


def fit(
    *,
    modules: list[nn.Module],
    step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    train: tuple[np.ndarray, np.ndarray],
    cfg,
    batch_size: int,
    augment: Augment | None,
    seed: int,
    desc: str,
    evaluate_fn: Callable[[], float] | None = None,
    on_epoch_start: Callable[[int, torch.optim.Optimizer], None] | None = None,
) -> dict:
    """Train the parameters of ``modules`` with ``step``; returns per-epoch history and wall time.

    ``evaluate_fn`` (validation accuracy) runs after every epoch when given; ``on_epoch_start(epoch, optimizer)``
    may change the model's mode or scale the learning rate (the schedulers continue from the scaled rate). A non-finite loss
    stops training with a clear error instead of writing a NaN checkpoint.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = loader(*train, batch_size=batch_size, shuffle=True, seed=seed)
    params = [p for m in modules for p in m.parameters()]
    opt = make_optimizer(params, cfg)
    sched = make_scheduler(opt, cfg, len(data))
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        if on_epoch_start:
            on_epoch_start(epoch, opt)
        for m in modules:
            m.train()
        t0, seen, correct, total_loss = time.perf_counter(), 0, 0, 0.0
        bar = tqdm(data, desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=None, dynamic_ncols=True)
        for xb, yb in bar:
            if augment is not None:
                xb = augment(xb, gen)
            loss, logits = step(xb, yb)
            if not torch.isfinite(loss):
                raise PipelineError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(yb)
            correct += int((logits.detach().argmax(1) == yb).sum())
            total_loss += float(loss.detach()) * len(yb)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        row = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1), "seconds": time.perf_counter() - t0}
        if evaluate_fn is not None:
            row["val_acc"] = evaluate_fn()
        history.append(row)
        tqdm.write(f"  {desc} epoch {row['epoch']}/{cfg.epochs}: loss {row['loss']:.4f} train {row['train_acc']:.3f}"
                   + (f" val {row['val_acc']:.3f}" if "val_acc" in row else "") + f" ({row['seconds']:.1f}s)")
    epoch_s = [r["seconds"] for r in history]
    return {"history": history, "seconds_per_epoch": float(np.mean(epoch_s)) if epoch_s else 0.0}
