"""Distill stage: train the student from the frozen teacher, once per seed, and report mean ± std.

The first seed's student is the one the deploy stages carry on with (``student.pt``); every
seed's checkpoint is kept (``student_seed<N>.pt``) so a seed can be inspected later. The
teacher supervises through a cheaper copy of itself (``supervising_teacher``: folded BN,
channels-last, bf16 where native), and for logit-only methods its logits are reused over
replayed views (``distill.teacher_reuse``); what the teacher costs per batch (averaged over every
step, reused ones included), and what the student's own part of a step costs, are recorded.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.distill import LOSSES
from pipeline.distill.trainer import DistillStep, LossWeights, ReusedTeacherLogits, reused_teacher
from pipeline.models import build_model, count_parameters
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.models.taps import FeatureTaps, probe, stage_names_of
from pipeline.models.weights import model_from_checkpoint
from pipeline.stages import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import DistillMetrics
from pipeline.train.bn_recalibration import recalibrate_bn
from pipeline.train.data import make_loader, training_data, val_or_test
from pipeline.train.distributed import current
from pipeline.train.loop import evaluate, fit
from pipeline.train.spec import FitSpec
from pipeline.train.supervision import TeacherForward, freeze, supervising_teacher


@dataclass
class SeedSetup:
    """What one seed trains: the student (fresh, or from ``student.checkpoint``), the loss with its
    training-only modules, the step, and the architecture the student checkpoint will record."""

    student: torch.nn.Module
    criterion: torch.nn.Module
    step: DistillStep
    prepare: dict
    arch: tuple[str, dict]
    source: dict | None = None  # provenance of student.checkpoint
    views_record: dict = field(default_factory=dict)  # teacher_reuse as applied: what the manifest says

    @property
    def views(self) -> int | None:
        """How many views ``fit`` replays (None: a new view every epoch)."""
        return self.views_record.get("teacher_views")

    def remove_taps(self) -> None:
        self.step.student_taps.remove()
        self.step.teacher_taps.remove()


def setup_seed(cfg, data, teacher: torch.nn.Module, seed: int, cache, supervisor: torch.nn.Module | None = None,
               teacher_run: TeacherForward = TeacherForward()) -> SeedSetup:
    """Build a seed's student, loss, hooks and teacher-side phase (cached), exactly as training uses them,
    on the placement's device. ``supervisor`` (default: ``teacher``) is the copy whose forward the steps
    run, under ``teacher_run``; teacher-side phases train on ``teacher`` itself.

    Also what ``benchmarks/distill_methods.py --cost`` and ``benchmarks/train_throughput.py`` time."""
    device = current().device
    supervisor = teacher if supervisor is None else supervisor
    c = data.input_shape[0]
    loss_cls = LOSSES[cfg.distill.method]
    options = loss_cls.Options.model_validate(cfg.distill.options)
    weights = LossWeights.resolve(cfg.distill, loss_cls)
    t_names = stage_names_of(teacher, cfg.teacher.stages)
    torch.manual_seed(seed)
    source = None
    if cfg.student.checkpoint:
        student, source = model_from_checkpoint(cfg.student, section="student", num_classes=data.num_classes, in_channels=c)
        arch = (source["arch"], source["arch_args"])
    else:
        student = build_model(cfg.student.arch, data.num_classes, c, cfg.student.arch_args)
        arch = (cfg.student.arch, dict(cfg.student.arch_args))
    student = student.to(device)
    s_names = stage_names_of(student, cfg.student.stages)
    criterion = loss_cls(
        options,
        probe(student, s_names, data.input_shape, data.num_classes),
        probe(teacher, t_names, data.input_shape, data.num_classes),
    ).to(device)
    feature_names = t_names if loss_cls.needs_features else []
    s_taps = FeatureTaps(student, s_names if loss_cls.needs_features else [])
    with FeatureTaps(teacher, feature_names) as phase_taps:
        # the phase's data: the training images without augmentation, batched as one process would
        phase_data = make_loader(data.train_plain, cfg.data.batch_size, shuffle=True, seed=seed, shard=False)
        prep = criterion.prepare_teacher(teacher, phase_taps, phase_data, cache)
    t_taps = FeatureTaps(supervisor, feature_names)
    views, views_record = reused_teacher(cfg.distill, loss_cls, weights, len(data.train) // current().world_size, data.num_classes)
    step = DistillStep(s_taps, t_taps, criterion, weights, teacher_run, reuse=ReusedTeacherLogits() if views else None)
    return SeedSetup(student.train(), criterion, step, prep, arch, source, views_record)


def run(ctx: StageContext) -> DistillMetrics:
    cfg = ctx.cfg
    place = current()
    data = training_data(ctx.input("data"), cfg.data)
    c, _, _ = data.input_shape
    teacher, tmeta = load_checkpoint(ctx.input("teacher") / TEACHER_CHECKPOINT)
    freeze(teacher).to(place.device)
    supervisor, teacher_run, teacher_record = supervising_teacher(teacher, cfg.distill)

    runs = []
    for seed in cfg.distill.seeds:
        setup = setup_seed(cfg, data, teacher, seed, ctx.cache, supervisor, teacher_run)
        student, criterion, step, prep = setup.student, setup.criterion, setup.step, setup.prepare
        spec = FitSpec.for_stage(cfg.distill, cfg.data, data.batch_augment, f"distill[{cfg.distill.method} seed {seed}]",
                                 seed=seed, views=setup.views)
        result = fit(modules=[student, criterion], step=step, train=data.train, spec=spec,
                     evaluate_fn=lambda: evaluate(student, val_or_test(data)),
                     on_epoch_end=(lambda row, i=len(runs): ctx.on_epoch("distill", i, row)) if getattr(ctx, "on_epoch", None) else None)
        setup.remove_taps()
        bn = recalibrate_bn(student, cfg.distill.recalibrate_bn, trained=cfg.distill.epochs > 0, images=data.train_plain,
                            batch_size=cfg.data.batch_size, evaluate=lambda: evaluate(student, val_or_test(data)))
        acc = evaluate(student, data.test)
        val = evaluate(student, data.val) if len(data.val) else None  # what method defaults are chosen on
        runs.append({"seed": seed, "test_acc": acc, "val_acc": val, "val_curve": [h["val_acc"] for h in result["history"]],
                     "seconds_per_epoch": result["seconds_per_epoch"],
                     "step_ms_per_batch": result["ms_per_step"], "teacher_ms_per_batch": step.teacher_ms_per_batch,
                     "student_ms_per_batch": max(result["ms_per_step"] - step.teacher_ms_per_batch, 0.0),
                     "shards": result["shards"], **(step.reuse.record() if step.reuse else {}),
                     **{f"prepare_{k}": v for k, v in prep.items()},
                     "bn_recalibration": bn, **({"source_checkpoint": setup.source} if setup.source else {})})
        if cfg.student.stages:
            student.stage_names = list(cfg.student.stages)
        save_checkpoint(
            ctx.out / f"student_seed{seed}.pt",
            student,
            {"arch": setup.arch[0], "arch_args": setup.arch[1], "num_classes": data.num_classes,
             "in_channels": c, "config": cfg.distill.model_dump(mode="json"), "seed": seed,
             "metrics": {"test_acc": acc}, **data.checkpoint_meta()},
        )
        print(f"  distill[{cfg.distill.method} seed {seed}]: test accuracy {acc:.4f}")
    shutil.copyfile(ctx.out / f"student_seed{cfg.distill.seeds[0]}.pt", ctx.out / STUDENT_CHECKPOINT)

    accs = np.array([r["test_acc"] for r in runs])
    mean_of = lambda key: float(np.mean([r[key] for r in runs]))  # noqa: E731
    return DistillMetrics.model_validate({
        "method": cfg.distill.method,
        "test_acc": float(accs[0]),
        "test_acc_mean": float(accs.mean()),
        "test_acc_std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
        "val_acc_mean": None if runs[0]["val_acc"] is None else float(np.mean([r["val_acc"] for r in runs])),
        "teacher_test_acc": evaluate(teacher, data.test),
        "student_params": count_parameters(student),
        "teacher_params": count_parameters(teacher),
        "seconds_per_epoch": mean_of("seconds_per_epoch"),
        "teacher_ms_per_batch": mean_of("teacher_ms_per_batch"),
        "student_ms_per_batch": mean_of("student_ms_per_batch"),
        **teacher_record,
        **setup.views_record,
        "weights": step.weights.__dict__,
        "bn_recalibrated": runs[0]["bn_recalibration"]["applied"],
        "seeds": runs,
    })
