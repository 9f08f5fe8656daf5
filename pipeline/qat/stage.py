"""QAT stage: fine-tune the distilled student with fake-quant, the frozen fp32 teacher still supervising.

Loss during QAT: w_ce·CE + w_kd·KD_T(student_fq, teacher) when ``qat.kd`` (default), else CE.
BN statistics freeze at ``freeze_bn_epoch`` and quantisation ranges at ``freeze_observer_epoch``
(the usual QAT recipe: let ranges settle, then train the weights against fixed ranges).
After copying the weights back, the float student's BN statistics are re-estimated when they lag
(``recalibrate_bn``, as Nagel et al. 2022 do after QAT): the export calibrates int8 ranges on it.
Outputs: ``student.pt`` (plain float module with the QAT-trained weights, what export reads)
and ``fakequant_test_logits.npy`` (the fake-quant model's test logits, for the benchmark).
"""

from __future__ import annotations

import shutil

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.distill.kd import kd_loss
from pipeline.distill.trainer import freeze
from pipeline.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from pipeline.qat.fake_quant import copy_back, freeze_bn_stats, freeze_observers, prepare_qat
from pipeline.target import TARGETS
from pipeline.train.bn_recalibration import recalibrate_bn
from pipeline.train.data import training_data, val_or_test
from pipeline.train.loop import evaluate, fit, predict


def run(ctx) -> dict:
    cfg = ctx.cfg.qat
    source = ctx.input("distill") / "student.pt"
    student, meta = load_checkpoint(source)
    data = training_data(ctx.input("data"))
    fp32_acc = evaluate(student, *data.test)
    if not cfg.enabled or cfg.epochs == 0:
        shutil.copyfile(source, ctx.out / "student.pt")
        np.save(ctx.out / "fakequant_test_logits.npy", predict(student.eval(), data.test[0]))
        return {"enabled": False, "fp32_acc": fp32_acc}

    rules = TARGETS[ctx.cfg.target.name]
    teacher, _ = load_checkpoint(ctx.input("teacher") / "teacher.pt")
    freeze(teacher)
    torch.manual_seed(ctx.cfg.data.seed)
    qat_model = prepare_qat(student, rules, torch.from_numpy(data.train[0][:2]))

    def step(x, y):
        logits = qat_model(x)
        loss = F.cross_entropy(logits, y)
        if cfg.kd:
            with torch.no_grad():
                t_logits = teacher(x)
            loss = cfg.w_ce * loss + cfg.w_kd * kd_loss(logits, t_logits, cfg.temperature)
        return loss, logits

    def on_epoch_start(epoch: int) -> None:
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
        augment=data.augment(ctx.cfg.data.augment),
        seed=ctx.cfg.data.seed,
        desc="qat",
        evaluate_fn=lambda: evaluate(qat_model, *val_or_test(data)),
        on_epoch_start=on_epoch_start,
    )
    qat_model.eval()
    fq_logits = predict(qat_model, data.test[0])
    np.save(ctx.out / "fakequant_test_logits.npy", fq_logits)
    fq_acc = float((fq_logits.argmax(1) == data.test[1]).mean())

    copy_back(qat_model, student)
    bn = recalibrate_bn(student, cfg.recalibrate_bn, trained=True, images=data.train[0], batch_size=ctx.cfg.data.batch_size,
                        evaluate=lambda: evaluate(student, *val_or_test(data)))
    qat_fp32_acc = evaluate(student, *data.test)
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
        "agreement_fakequant_vs_fp32": float((fq_logits.argmax(1) == predict(student, data.test[0]).argmax(1)).mean()),
        "per_channel": rules.per_channel,
        "kd": cfg.kd,
        "bn_recalibration": bn,
        "seconds_per_epoch": result["seconds_per_epoch"],
    }
