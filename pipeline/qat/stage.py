"""QAT stage: fine-tune the distilled student with fake-quant, the frozen fp32 teacher still supervising.

Loss during QAT: w_ce·CE + w_kd·KD_T(student_fq, teacher) when ``qat.kd`` (default), else CE.
BN statistics freeze at ``freeze_bn_epoch`` and quantisation ranges at ``freeze_observer_epoch``
(the usual QAT recipe: let ranges settle, then train the weights against fixed ranges).
Outputs: ``student.pt`` (plain float module with the QAT-trained weights, what export reads)
and ``fakequant_test_logits.npy`` (the fake-quant model's test logits, for the benchmark).
"""

from __future__ import annotations

import shutil

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.distill.kd import kd_loss
from pipeline.distill.trainer import freeze, supervising_teacher
from pipeline.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from pipeline.qat.fake_quant import copy_back, freeze_bn_stats, freeze_observers, prepare_qat
from pipeline.target import TARGETS
from pipeline.train.data import training_data, val_or_test
from pipeline.train.distributed import current
from pipeline.train.loop import evaluate, fit, predict, predict_with_labels


def run(ctx) -> dict:
    cfg = ctx.cfg.qat
    source = ctx.input("distill") / "student.pt"
    student, meta = load_checkpoint(source)
    device = current().device
    student.to(device)
    data = training_data(ctx.input("data"), ctx.cfg.data)
    fp32_acc = evaluate(student, data.test)
    if not cfg.enabled or cfg.epochs == 0:
        shutil.copyfile(source, ctx.out / "student.pt")
        np.save(ctx.out / "fakequant_test_logits.npy", predict(student.eval(), data.test))
        return {"enabled": False, "fp32_acc": fp32_acc}

    rules = TARGETS[ctx.cfg.target.name]
    teacher, _ = load_checkpoint(ctx.input("teacher") / "teacher.pt")
    supervisor, teacher_run, teacher_record = supervising_teacher(freeze(teacher).to(device), cfg)
    torch.manual_seed(ctx.cfg.data.seed)
    qat_model = prepare_qat(student, rules, data.example(2).to(device)).to(device)

    def step(x, y):
        logits = qat_model(x)
        loss = F.cross_entropy(logits, y)
        if cfg.kd:
            t_logits = teacher_run(supervisor, x).float()
            loss = cfg.w_ce * loss + cfg.w_kd * kd_loss(logits, t_logits, cfg.temperature)
        return loss, logits

    def on_epoch_start(epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if cfg.freeze_bn_epoch is not None and epoch >= cfg.freeze_bn_epoch:
            freeze_bn_stats(qat_model)
        if epoch >= cfg.freeze_observer_epoch:
            freeze_observers(qat_model)

    result = fit(
        modules=[qat_model],
        step=step,
        train=data.train,
        cfg=cfg,
        batch_size=ctx.cfg.data.batch_size,
        augment=data.batch_augment,
        seed=ctx.cfg.data.seed,
        desc="qat",
        evaluate_fn=lambda: evaluate(qat_model, val_or_test(data)),
        on_epoch_start=on_epoch_start,
    )
    qat_model.eval()
    fq_logits, test_labels = predict_with_labels(qat_model, data.test)
    np.save(ctx.out / "fakequant_test_logits.npy", fq_logits)
    fq_acc = float((fq_logits.argmax(1) == test_labels).mean())

    copy_back(qat_model, student)
    student.eval()
    qat_fp32_acc = evaluate(student, data.test)
    blob = read_checkpoint(source)
    save_checkpoint(
        ctx.out / "student.pt",
        student,
        {**{k: v for k, v in blob.items() if k not in ("state_dict", "pipeline_version")},
         "qat": {"config": cfg.model_dump(mode="json"), "target": rules.name, "per_channel": rules.per_channel},
         "metrics": {"fakequant_acc": fq_acc, "fp32_acc": qat_fp32_acc}},
    )
    return {
        "enabled": True,
        "fp32_acc_before": fp32_acc,
        "fakequant_accuracy": fq_acc,
        "fp32_acc_after": qat_fp32_acc,
        "agreement_fakequant_vs_fp32": float((fq_logits.argmax(1) == predict(student, data.test).argmax(1)).mean()),
        "per_channel": rules.per_channel,
        "kd": cfg.kd,
        "seconds_per_epoch": result["seconds_per_epoch"],
        **(teacher_record if cfg.kd else {}),
    }
