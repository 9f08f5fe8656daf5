"""Parameters and multiply-accumulates of a PyTorch model at batch 1 (exported artifacts inherit their source's).

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (counts convolutions and matmuls
at the aten level, so grouped/depthwise convolutions and linear layers are exact); one MAC =
two FLOPs there. Element-wise ops (BN, ReLU, adds, pooling) are not counted, as in the
papers' "MACs" and Ultralytics' GFLOPs column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_complexity(model, input_shape: tuple[int, ...]) -> dict[str, int]:
    """``{"params", "macs"}`` of ``model`` on one input of shape C×H×W."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    x = torch.zeros(1, *input_shape)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return {"params": int(params), "macs": int(counter.get_total_flops() // 2)}


def checkpoint_summary(path: Path, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """arch, params, MACs, file and size of a pipeline checkpoint."""
    from pipeline.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(path)
    return {
        "arch": meta.get("arch"),
        **model_complexity(model, tuple(input_shape)),
        "file": Path(path).name,
        "size_bytes": Path(path).stat().st_size,
    }
