"""Teacher stage: train the teacher, or load ``teacher.checkpoint`` (any form ``models/weights.py`` accepts)
and fine-tune it when ``teacher.epochs > 0``; re-estimate BN statistics after training when they lag
(``train/bn_recalibration.py``); evaluate it on the test split.

With ``teacher.regularizer: icc`` the teacher trains as an *expressive teacher* (Tan, Liu,
Zhang 2021): CE + λ_t·‖C_t − S‖²_F/K², see ``pipeline/distill/icc.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import build_model, count_parameters
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.weights import model_from_checkpoint
from pipeline.stages import TEACHER_CHECKPOINT
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import TeacherMetrics
from pipeline.train.bn_recalibration import recalibrate_bn
from pipeline.train.data import training_data, val_or_test
from pipeline.train.distributed import current
from pipeline.train.loop import evaluate, fit
from pipeline.train.spec import FitSpec


def classifier_weight(model: nn.Module) -> torch.Tensor:
    """The K×D weight of the model's last linear layer (the class prototypes the ICC regulariser reads)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].weight


TIMINGS = ("history", "seconds_per_epoch", "ms_per_step")  # in the manifest, not in teacher.pt: same weights, same bytes


def run(ctx: StageContext) -> TeacherMetrics:
    cfg = ctx.cfg.teacher
    data = training_data(ctx.input("data"), ctx.cfg.data)
    c, _, _ = data.input_shape
    metrics: dict = {}
    torch.manual_seed(ctx.cfg.data.seed)
    if cfg.checkpoint:
        model, source = model_from_checkpoint(cfg, section="teacher", num_classes=data.num_classes, in_channels=c)
        arch, arch_args = source["arch"], source["arch_args"]
        metrics["source_checkpoint"] = source
        metrics["source_checkpoint_sha256"] = source["sha256"]
        model = model.to(current().device)
        if cfg.epochs:
            metrics["loaded_test_acc"] = evaluate(model, data.test)
    else:
        model = build_model(cfg.arch, data.num_classes, c, cfg.arch_args).to(current().device)
        arch, arch_args = cfg.arch, cfg.arch_args
    if cfg.epochs:  # from scratch, or fine-tuning the loaded checkpoint
        from pipeline.distill.icc import icc_teacher_term, icc_teacher_weight

        icc_weight = {"now": 0.0}  # λ_t this epoch: 0 without the regulariser or early in its warm-up
        warmup_epochs = math.ceil(cfg.icc.warmup_fraction * cfg.epochs)

        def on_epoch_start(epoch: int, optimizer) -> None:
            if cfg.regularizer == "icc":
                icc_weight["now"] = icc_teacher_weight(cfg.icc.lambda_t, warmup_epochs, epoch)

        def step(x, y, _position):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if icc_weight["now"]:
                loss = loss + icc_weight["now"] * icc_teacher_term(logits, classifier_weight(model), cfg.icc.temperature)
            return loss, logits

        result = fit(modules=[model], step=step, train=data.train,
                     spec=FitSpec.for_stage(cfg, ctx.cfg.data, data.batch_augment, "teacher"),
                     evaluate_fn=lambda: evaluate(model, val_or_test(data)), on_epoch_start=on_epoch_start,
                     on_epoch_end=(lambda row: ctx.on_epoch("teacher", 0, row)) if ctx.on_epoch else None)
        metrics["seconds_per_epoch"] = round(result["seconds_per_epoch"], 3)
        metrics["ms_per_step"] = round(result["ms_per_step"], 3)
        metrics["history"] = result["history"]
    metrics["bn_recalibration"] = recalibrate_bn(model, cfg.recalibrate_bn, trained=cfg.epochs > 0, images=data.train_plain,
                                                 batch_size=ctx.cfg.data.batch_size,
                                                 evaluate=lambda: evaluate(model, val_or_test(data)))
    model.eval()
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
        ctx.out / TEACHER_CHECKPOINT,
        model,
        {"arch": arch, "arch_args": arch_args, "num_classes": data.num_classes, "in_channels": c,
         "config": cfg.model_dump(mode="json"),  # no timings: the same weights give the same bytes, so nothing re-runs
         "metrics": {k: v for k, v in metrics.items() if k not in TIMINGS},
         **data.checkpoint_meta()},
    )
    return TeacherMetrics.model_validate(metrics)
