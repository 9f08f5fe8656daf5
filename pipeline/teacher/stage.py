"""Teacher stage: load ``teacher.checkpoint`` or train the teacher; either way evaluate it on the test split.

With ``teacher.regularizer: icc`` the teacher trains as an *expressive teacher* (Tan, Liu,
Zhang 2021): CE + λ_t·‖C_t − S‖²_F/K², see ``pipeline/distill/icc.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.artifacts import sha256_file
from pipeline.models import build_model, count_parameters
from pipeline.models.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from pipeline.train.data import training_data, val_or_test
from pipeline.train.distributed import current
from pipeline.train.loop import evaluate, fit


def classifier_weight(model: nn.Module) -> torch.Tensor:
    """The K×D weight of the model's last linear layer (the class prototypes the ICC regulariser reads)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].weight


def run(ctx) -> dict:
    cfg = ctx.cfg.teacher
    data = training_data(ctx.input("data"), ctx.cfg.data)
    c, _, _ = data.input_shape
    metrics: dict = {}
    if cfg.checkpoint:
        model, meta = load_checkpoint(cfg.checkpoint)
        check_compatible(meta, num_classes=data.num_classes, in_channels=c, path=cfg.checkpoint)
        arch, arch_args = meta["arch"], meta["arch_args"]
        metrics["source_checkpoint_sha256"] = sha256_file(cfg.checkpoint)
    else:
        torch.manual_seed(ctx.cfg.data.seed)
        model = build_model(cfg.arch, data.num_classes, c, cfg.arch_args).to(current().device)
        arch, arch_args = cfg.arch, cfg.arch_args
        icc_term = None
        if cfg.regularizer == "icc":
            from pipeline.distill.icc import icc_teacher_term

            icc_term = icc_teacher_term

        def step(x, y):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if icc_term is not None:
                loss = loss + cfg.icc.lambda_t * icc_term(logits, classifier_weight(model), cfg.icc.temperature)
            return loss, logits

        result = fit(
            modules=[model],
            step=step,
            train=data.train,
            cfg=cfg,
            batch_size=ctx.cfg.data.batch_size,
            augment=data.batch_augment,
            seed=ctx.cfg.data.seed,
            desc="teacher",
            evaluate_fn=lambda: evaluate(model, val_or_test(data)),
        )
        metrics["seconds_per_epoch"] = round(result["seconds_per_epoch"], 3)
        metrics["ms_per_step"] = round(result["ms_per_step"], 3)
        metrics["history"] = result["history"]
    model.to(current().device).eval()
    metrics = {
        "test_acc": evaluate(model, data.test),
        "val_acc": evaluate(model, val_or_test(data)),
        "params": count_parameters(model),
        "arch": arch,
        "regularizer": cfg.regularizer,
        **metrics,
    }
    if cfg.stages:
        model.stage_names = list(cfg.stages)
    save_checkpoint(
        ctx.out / "teacher.pt",
        model,
        {"arch": arch, "arch_args": arch_args, "num_classes": data.num_classes, "in_channels": c,
         "config": cfg.model_dump(mode="json"), "metrics": {k: v for k, v in metrics.items() if k != "history"},
         **data.checkpoint_meta()},
    )
    return metrics
