"""QAT stage: fine-tune the distilled student with fake-quant, the frozen fp32 teacher still supervising,
then decide which weights the export stage should quantise.

Loss during QAT: w_ce·CE + w_kd·KD_T(student_fq, teacher) when ``qat.kd`` (default), else CE.
Quantisation ranges freeze at ``freeze_observer_epoch``. BN statistics keep tracking the batch
by default (``freeze_bn_epoch: null``): freezing them turns every conv-BN pair into a fixed
affine map, which raised the top eigenvalue of the loss Hessian from ~20 to ~700 on the
students measured (benchmarks/qat_vs_ptq.py), so SGD with momentum 0.9 is stable only below lr
≈ 0.002 and the old default (freeze at epoch 1, lr 0.005) diverged on new data (84 % → 9 %).
A user who freezes BN gets the learning rate scaled by ``lr_after_bn_freeze`` at that epoch.

The guard: QAT can still lose to plain post-training quantisation. On the validation split the
stage measures the distilled fp32 student, PTQ int8 of the distilled weights, the QAT fake-quant
model and PTQ int8 of the QAT weights (what the export path makes of them: converters calibrate
the float weights again), both quantised as the export path does (``post_training_quantized``).
``guard.json`` records the numbers and which weights to export; ``export.source: auto`` follows it.

After copying the weights back, the float student's BN statistics are re-estimated when they lag
(``recalibrate_bn``, as Nagel et al. 2022 do after QAT), before the guard measures them.

Outputs: ``student.pt`` (plain float module with the QAT-trained weights), ``guard.json`` and
``fakequant_test_logits.npy`` (the fake-quant model's test logits, for the benchmark).
"""

from __future__ import annotations

import shutil

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pipeline.artifacts import atomic_write_json
from pipeline.decision import accuracy, decision, interval, supported_clause
from pipeline.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from pipeline.qat.fake_quant import copy_back, freeze_bn_stats, freeze_observers, post_training_quantized, prepare_qat
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import QatMetrics
from pipeline.stages import CALIBRATION_FILE, FAKEQUANT_LOGITS, GUARD_FILE, STUDENT_CHECKPOINT, TEACHER_CHECKPOINT
from pipeline.target import TARGETS
from pipeline.train.bn_recalibration import recalibrate_bn
from pipeline.train.data import TrainingData, training_data, val_or_test
from pipeline.train.distributed import current
from pipeline.train.loop import evaluate, fit, predict, predict_with_labels
from pipeline.train.spec import FitSpec
from pipeline.train.supervision import TeacherForward, freeze, kd_loss, supervising_teacher


def run(ctx: StageContext) -> QatMetrics:
    cfg = ctx.cfg.qat
    source = ctx.input("distill") / STUDENT_CHECKPOINT
    student, meta = load_checkpoint(source)
    device = current().device
    student.to(device)
    data = training_data(ctx.input("data"), ctx.cfg.data)
    fp32_acc = evaluate(student, data.test)
    if not cfg.enabled or cfg.epochs == 0:
        shutil.copyfile(source, ctx.out / STUDENT_CHECKPOINT)
        np.save(ctx.out / FAKEQUANT_LOGITS, predict(student.eval(), data.test))
        guard = {"export": "distill", "reason": "QAT is off (qat.enabled: false or qat.epochs: 0): the distilled weights"}
        atomic_write_json(ctx.out / GUARD_FILE, guard)
        return QatMetrics.model_validate({"enabled": False, "fp32_acc": fp32_acc, "guard": guard})

    rules = TARGETS[ctx.cfg.target.name]
    teacher, _ = load_checkpoint(ctx.input("teacher") / TEACHER_CHECKPOINT)
    supervisor, teacher_run, teacher_record = supervising_teacher(freeze(teacher).to(device), cfg)
    distilled = load_checkpoint(source)[0].to(device)
    torch.manual_seed(ctx.cfg.data.seed)
    qat_model = prepare_qat(student, rules, data.example(2).to(device)).to(device)

    result = _train_fake_quant(cfg, qat_model, supervisor, teacher_run, data, ctx.cfg.data)
    qat_model.eval()
    fq_logits, test_labels = predict_with_labels(qat_model, data.test)
    np.save(ctx.out / FAKEQUANT_LOGITS, fq_logits)
    fq_acc = float((fq_logits.argmax(1) == test_labels).mean())

    copy_back(qat_model, student)
    bn = recalibrate_bn(student, cfg.recalibrate_bn, trained=True, images=data.train_plain, batch_size=ctx.cfg.data.batch_size,
                        evaluate=lambda: evaluate(student, val_or_test(data)))
    qat_fp32_acc = evaluate(student, data.test)
    calibration = torch.from_numpy(np.load(ctx.input("data") / CALIBRATION_FILE))
    split = "validation" if len(data.val) else "training images (the validation split is empty)"
    guard = decide(
        {"distill": distilled, "qat": student}, qat_model, calibration, val_or_test(data), rules, cfg.guard_tolerance, split,
    )
    atomic_write_json(ctx.out / GUARD_FILE, guard)
    if guard["export"] != "qat":
        from rich.markup import escape

        from pipeline.console import console

        console.print(f"[bold yellow]⚠ qat guard: {escape(guard['reason'])}[/bold yellow]")
    blob = read_checkpoint(source)
    save_checkpoint(
        ctx.out / STUDENT_CHECKPOINT,
        student,
        {**{k: v for k, v in blob.items() if k not in ("state_dict", "pipeline_version")},
         "qat": {"config": cfg.model_dump(mode="json"), "target": rules.name, "per_channel": rules.per_channel},
         "metrics": {"fakequant_acc": fq_acc, "fp32_acc": qat_fp32_acc}},
    )
    return QatMetrics.model_validate({
        "enabled": True,
        "fp32_acc_before": fp32_acc,
        "fakequant_accuracy": fq_acc,
        "fp32_acc_after": qat_fp32_acc,
        "agreement_fakequant_vs_fp32": float((fq_logits.argmax(1) == predict(student, data.test).argmax(1)).mean()),
        "per_channel": rules.per_channel,
        "kd": cfg.kd,
        "bn_recalibration": bn,
        "seconds_per_epoch": result["seconds_per_epoch"],
        "history": result["history"],
        "guard": guard,
        **(teacher_record if cfg.kd else {}),
    })


def _train_fake_quant(cfg, qat_model: torch.nn.Module, supervisor: torch.nn.Module, teacher_run: TeacherForward,
                      data: TrainingData, data_cfg) -> dict:
    """Fine-tune the fake-quant model (CE, plus KD from the supervising teacher when ``qat.kd``), freezing
    BN statistics and observers at their epochs; ``fit``'s result."""

    def step(x, y, _position):
        logits = qat_model(x)
        loss = F.cross_entropy(logits, y)
        if cfg.kd:
            t_logits = teacher_run(supervisor, x).float()
            loss = cfg.w_ce * loss + cfg.w_kd * kd_loss(logits, t_logits, cfg.temperature)
        return loss, logits

    def on_epoch_start(epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if cfg.freeze_bn_epoch is not None and epoch >= cfg.freeze_bn_epoch:
            freeze_bn_stats(qat_model)
            if epoch == cfg.freeze_bn_epoch:  # the schedulers continue from the scaled rate
                for group in optimizer.param_groups:
                    group["lr"] *= cfg.lr_after_bn_freeze
        if cfg.freeze_observer_epoch is not None and epoch >= cfg.freeze_observer_epoch:
            freeze_observers(qat_model)

    return fit(modules=[qat_model], step=step, train=data.train, spec=FitSpec.for_stage(cfg, data_cfg, data.batch_augment, "qat"),
               evaluate_fn=lambda: evaluate(qat_model, val_or_test(data)), on_epoch_start=on_epoch_start)


def decide(weights: dict, qat_model, calibration: torch.Tensor, val: Dataset, rules, tolerance: float,
           split: str = "validation") -> dict:
    """Validation top-1 (%) of each weight set in fp32 and as the export path quantises it; which to export, and why.

    QAT is kept unless its int8 trails PTQ int8 of the distilled weights by more than
    ``tolerance`` points, and by more than one image (a one-image difference is noise). QAT is the
    stage's product, so unlike the export's remedies it needs no proof to be kept; the record's
    ``decision`` (``pipeline/decision.py``) still gives the paired 95 % interval of QAT int8 minus PTQ
    int8, and ``supported`` says whether QAT is better beyond doubt, so both rules can be read together."""
    pct = lambda model: round(100.0 * evaluate(model, val), 4)  # noqa: E731
    hits = {name: _hits(post_training_quantized(weights[name], rules, calibration), val) for name in ("distill", "qat")}
    numbers = {
        "val_images": len(val),
        "distill_fp32": pct(weights["distill"]),
        "distill_int8": round(100.0 * accuracy(hits["distill"]), 4),
        "qat_fakequant": pct(qat_model),
        "qat_fp32": pct(weights["qat"]),
        "qat_int8": round(100.0 * accuracy(hits["qat"]), 4),
    }
    judged = decision(hits["qat"], hits["distill"], split)
    margin = max(tolerance, 100.0 / max(len(val), 1))
    loss = numbers["distill_int8"] - numbers["qat_int8"]
    keep_qat = loss <= margin
    said = (f"int8 on {len(val)} {split} images: QAT weights {numbers['qat_int8']:.2f} %, "
            f"PTQ of the distilled weights {numbers['distill_int8']:.2f} % (fp32 {numbers['distill_fp32']:.2f} %); "
            + (supported_clause(judged) if judged["supported"] else f"{interval(judged)} cannot show QAT better beyond doubt"))
    if keep_qat:
        reason = f"QAT weights: {said}"
    else:
        reason = (f"distilled weights: QAT lost {loss:.2f} points against PTQ (tolerance {margin:.2f}); {said}; "
                  "set export.source: qat to export the QAT weights anyway")
    return {"export": "qat" if keep_qat else "distill", "reason": reason, "tolerance_points": round(margin, 4), **numbers,
            "decision": judged}


def _hits(model, val: Dataset) -> np.ndarray:
    """Per-image correctness of ``model`` on ``val`` in eval mode (what the guard's interval pairs)."""
    was = model.training
    model.eval()
    logits, labels = predict_with_labels(model, val)
    model.train(was)
    return logits.argmax(1) == labels
