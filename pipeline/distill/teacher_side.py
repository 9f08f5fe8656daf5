"""What the teacher-side phases of AMA and MHKD share: a cache keyed by what shaped the result,
their training (``train_phase``: ``fit`` with the phase's own fixed settings), and an accuracy pass.

A teacher-side phase trains a few modules on top of the frozen teacher (AMA's adaptive module,
MHKD's teacher heads) before any student trains. Its result depends only on the teacher's
weights, the method's options, the student's stage shapes and the training data, so it is
cached under ``cache_dir/<method>/<key>.pt`` and every later student run (another seed, another
student schedule) reuses it. The phase draws its own batch order and initialisation from
``options.seed``, never from the student's seed, so the cached result is the one any run would
have computed.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.artifacts import atomic_write_bytes, hash_json
from pipeline.train.data import make_loader
from pipeline.train.distributed import alone, current, on_main
from pipeline.train.loop import Step, fit
from pipeline.train.spec import FitSpec, Schedule


def fingerprint_module(module: nn.Module) -> str:
    """sha256 of every state tensor (names, dtypes, shapes, values), in state_dict order."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint_data(loader: DataLoader) -> str:
    """sha256 of the dataset behind a loader (order-free: the dataset, not the batches)."""
    ds = loader.dataset
    if hasattr(ds, "fingerprint"):  # a streamed folder: its files' recorded hashes, not a decoding pass
        return ds.fingerprint()
    h = hashlib.sha256()
    tensors = ds.tensors if isinstance(ds, TensorDataset) else (t for i in range(len(ds)) for t in ds[i])
    for t in tensors:
        t = torch.as_tensor(t).detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(method: str, options: dict[str, Any], teacher: nn.Module, loader: DataLoader, **shapes: Any) -> str:
    """Hash of what shapes a teacher-side phase: the options that reach it, the teacher's weights,
    the data, and the shapes/stages its modules were sized for."""
    return hash_json({
        "method": method,
        "options": options,
        "teacher": fingerprint_module(teacher),
        "data": fingerprint_data(loader),
        "batch_size": loader.batch_size,
        **shapes,
    })


def load_cached(path: Path, module: nn.Module) -> dict[str, Any] | None:
    """Load a cached phase into ``module``; returns its metrics, or None when absent or stale."""
    if not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(blob["state"])
    except (RuntimeError, KeyError):
        return None  # shapes changed under the same key (code change): recompute
    return json.loads(blob["metrics"])


def save_cached(path: Path, module: nn.Module, metrics: dict[str, Any]) -> None:
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save({"state": state, "metrics": json.dumps(metrics)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def cached_phase(path: Path, module: nn.Module, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Load ``module``'s phase from ``path``, or ``compute()`` it (training ``module``) and cache it.

    Under torchrun rank 0 alone loads or computes and writes; the other ranks wait for it, then load
    the same file, so every rank supervises with identical modules. Returns the phase's metrics,
    with ``cached`` saying whether it was reused."""

    def load_or_compute() -> dict[str, Any]:
        metrics = load_cached(path, module)
        if metrics is not None:
            return {**metrics, "cached": True}
        metrics = compute()
        save_cached(path, module, metrics)
        return {**metrics, "cached": False}

    metrics = on_main(load_or_compute)
    if not current().is_main and load_cached(path, module) is None:
        raise RuntimeError(f"{path}: rank 0 cached this phase, yet it does not load here")
    return metrics


def ordered(loader: DataLoader) -> DataLoader:
    return make_loader(loader.dataset, loader.batch_size or 64, shuffle=False, shard=False)


def reset_parameters(module: nn.Module, seed: int) -> None:
    """Re-draw every freshly built layer from ``seed`` without touching the global RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


# a phase's own settings, whatever the student's schedule: SGD (Nesterov), cosine, fp32
PHASE_OPTIMISER = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}


def train_phase(modules: list[nn.Module], step: Step, loader: DataLoader, seed: int, epochs: int, lr: float, desc: str) -> float:
    """Train a phase's ``modules`` with ``step(x, y, position) -> (loss, logits)`` through ``fit``; returns seconds spent.

    ``loader``'s images, shuffled by the phase's ``seed`` (not the student's), in one process (the
    phase runs on rank 0 alone, see ``cached_phase``), in fp32, with no epoch lines; torch's global RNG
    is left as it is. ``modules`` are put in train mode each epoch and in eval mode after; whatever
    frozen teacher ``step`` reads is the caller's to keep in eval mode.
    """
    if epochs == 0 or not any(p.requires_grad for m in modules for p in m.parameters()):
        return 0.0
    spec = FitSpec(Schedule(epochs=epochs, lr=lr, **PHASE_OPTIMISER), batch_size=loader.batch_size or 64, seed=seed,
                   desc=desc, precision="fp32", seeds_global_rng=False, epoch_lines=False)
    t0 = time.perf_counter()
    with alone():
        fit(modules=modules, step=step, train=loader.dataset, spec=spec)
    for m in modules:
        m.eval()
    return time.perf_counter() - t0


@torch.no_grad()
def accuracies(predict: Callable[[torch.Tensor], list[torch.Tensor]], loader: DataLoader) -> list[float]:
    """Top-1 of each of the logits ``predict(x)`` returns, over the whole loader (callers set eval mode)."""
    correct: list[int] = []
    seen = 0
    device = current().device
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        outs = predict(x)
        correct = correct or [0] * len(outs)
        for i, z in enumerate(outs):
            correct[i] += int((z.argmax(1) == y).sum())
        seen += len(y)
    return [c / max(seen, 1) for c in correct]
