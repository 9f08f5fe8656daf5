"""Accuracy through every stage: one chain of top-1 numbers on one set of test images, and where it drops.

The chain (``STAGE_CHAIN``) runs teacher fp32 (and its ONNX export, the latency baseline) → student fp32 (after distillation) → student
fake-quant (after QAT) → student fp32 with the QAT weights → ONNX → TFLite fp32 → TFLite int8, and
ONNX → OpenVINO fp32 → fp16/int8. Each stage names its *parent*, the stage it was made from,
so ``drop_vs_parent_pts`` says which step lost accuracy. Agreement is the fraction of images
whose top-1 class equals that of a reference stage (teacher, fp32 student, fake-quant student):
a conversion bug shows up as low agreement even where accuracy happens to hold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.formats import EXPORT_SOURCE, FORMATS

# stage -> (label, parent stage): the PyTorch stages, then every export format in table order, whose
# parent is what its converter started from (``Format.source``; EXPORT_SOURCE = the exported weights)
STAGE_CHAIN: dict[str, tuple[str, str | None]] = {
    "teacher_fp32": ("teacher fp32 (PyTorch)", None),
    "teacher_onnx": ("teacher fp32 ONNX (ONNX Runtime): the latency baseline", "teacher_fp32"),
    "student_fp32": ("student fp32 after distillation (PyTorch)", "teacher_fp32"),
    "student_fakequant": ("student fake-quant after QAT (PyTorch)", "student_fp32"),
    "student_qat_fp32": ("student fp32 with QAT weights (PyTorch, exported)", "student_fakequant"),
}


def stage_chain() -> dict[str, tuple[str, str | None]]:
    """``STAGE_CHAIN`` followed by the export formats, read from the format table at call time."""
    return {**STAGE_CHAIN, **{key: (fmt.label, fmt.source) for key, fmt in FORMATS.items()}}
REFERENCES = ("teacher", "student_fp32", "student_fakequant")  # agreement columns
REFERENCE_STAGE = {"teacher": "teacher_fp32", "student_fp32": "student_fp32", "student_fakequant": "student_fakequant"}


def predict_classes(runtime, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Top-1 class per image, in chunks so a large test split never sits in one runtime call."""
    out = []
    for i in range(0, len(images), batch):
        logits = np.asarray(runtime.predict(np.ascontiguousarray(images[i : i + batch])))
        if logits.ndim != 2 or len(logits) != len(images[i : i + batch]):
            raise ValueError(f"{getattr(runtime, 'name', 'runtime')}: predict returned shape {logits.shape}, expected N×K")
        out.append(logits.argmax(axis=1))
    return np.concatenate(out).astype(np.int64)


def top1(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(labels)))


def agreement(pred: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of images on which two models pick the same class."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions of different lengths: {pred.shape} vs {ref.shape}")
    return float(np.mean(pred == ref))


def accuracy_rows(
    preds: dict[str, np.ndarray],
    labels: np.ndarray,
    *,
    engines: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    export_source: str = "student_qat_fp32",
) -> list[dict[str, Any]]:
    """One row per stage of ``stage_chain()`` that has predictions or an error, in chain order.

    ``preds``: stage -> top-1 classes (N,) on the same images as ``labels``; ``errors``: stage ->
    why it has none (not exported, failed to load…). ``export_source`` is the stage the ONNX
    export started from (``student_qat_fp32`` or ``student_fp32``).
    """
    engines, errors = engines or {}, errors or {}
    n = int(len(labels))
    acc = {stage: top1(p, labels) for stage, p in preds.items()}
    chain = stage_chain()
    unknown = [stage for stage in [*preds, *errors] if stage not in chain]
    if unknown:
        raise ValueError(f"accuracy rows for {', '.join(unknown)}: neither a stage nor an export format "
                         f"(known: {', '.join(chain)})")
    rows = []
    for stage, (label, parent) in chain.items():
        if stage not in preds and stage not in errors:
            continue
        parent = _measured_ancestor(stage, chain, acc, export_source)
        p = preds.get(stage)
        agree = {
            name: (agreement(p, preds[ref]) if p is not None and ref in preds else None)
            for name, ref in REFERENCE_STAGE.items()
        }
        top = acc.get(stage)
        rows.append({
            "stage": stage,
            "label": label,
            "model": "teacher" if stage in TEACHER_STAGES else "student",
            "artifact": TEACHER_STAGES.get(stage) or ("pytorch" if stage in PYTORCH_STAGES else stage),
            "engine": engines.get(stage),
            "parent": parent,
            "top1": top,
            "images": n,
            "agreement": agree,
            "drop_vs_parent_pts": _pts(acc.get(parent), top),
            "drop_vs_teacher_pts": _pts(acc.get("teacher_fp32"), top) if stage != "teacher_fp32" else None,
            "error": errors.get(stage) if p is None else None,
        })
    return rows


def _measured_ancestor(stage: str, chain: dict[str, tuple[str, str | None]], acc: dict[str, float],
                       export_source: str) -> str | None:
    """The nearest stage up the chain that was measured, skipping missing links (no QAT: compare with what it came
    from). Each stage is visited once: given artifacts alone (``benchmark X.tflite``) have ``export_source`` = a format
    whose own source is EXPORT_SOURCE, a loop that used to spin forever; it ends at no parent instead."""
    seen, parent = {stage}, chain[stage][1]
    while parent is not None:
        parent = export_source if parent == EXPORT_SOURCE else parent
        if parent in seen:
            return None
        if parent in acc or parent not in chain:
            return parent
        seen.add(parent)
        parent = chain[parent][1]
    return None


PYTORCH_STAGES = ("teacher_fp32", "student_fp32", "student_fakequant", "student_qat_fp32")
TEACHER_STAGES = {"teacher_fp32": "pytorch", "teacher_onnx": "onnx"}  # stage -> the teacher's artifact


def _pts(before: float | None, after: float | None) -> float | None:
    """Accuracy lost from ``before`` to ``after``, in percentage points (negative = gained)."""
    if before is None or after is None:
        return None
    return round((before - after) * 100.0, 4)
