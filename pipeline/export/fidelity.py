"""Does an exported artifact still compute the student? Compared with PyTorch on the whole test split.

Float artifacts must reproduce the PyTorch logits: top-1 agreement ≥ 99.9 % and
max |Δlogit| ≤ ``export.fp32_rtol`` (default 1e-3) × the logits' scale (``torch2onnx.logits_match``). An int8 artifact may move logits, so it is held to accuracy: at least
99 % of the fp32 student's (the MLPerf Inference closed-division rule for quantised
models, Reddi et al. 2020, "MLPerf Inference Benchmark"). fp16 gets agreement ≥ 99 %.
Which rule a format is held to (``logits``, ``agreement``, ``accuracy``) is its row's ``fidelity``
in ``pipeline/formats/__init__.py``.
"""

from __future__ import annotations

import numpy as np

from pipeline.formats import get_format

MIN_AGREEMENT_FP32 = 0.999
MIN_AGREEMENT_FP16 = 0.99
MIN_INT8_RETAINED = 0.99  # int8 accuracy / fp32 accuracy


def compare(key: str, logits: np.ndarray, reference: np.ndarray, labels: np.ndarray, fp32_rtol: float = 1e-3) -> dict:
    """Accuracy, agreement with the reference's top-1, max |Δlogit|, and the verdict by the format's fidelity rule.

    ``logits``/``reference``: float32 N×K; ``labels``: int64 N. ``message`` says, with both
    numbers, why a check failed (empty when it passed).
    """
    pred, ref = logits.argmax(1), reference.argmax(1)
    acc = float((pred == labels).mean())
    ref_acc = float((ref == labels).mean())
    agreement = float((pred == ref).mean())
    logits_ok, max_diff, scale = logits_match(logits, reference, fp32_rtol)
    fmt = get_format(key)  # an unknown key is an error: no format is judged by a rule it was not given
    precision, rule = fmt.precision, fmt.fidelity
    row = {"precision": precision, "accuracy": acc, "reference_accuracy": ref_acc, "agreement": agreement,
           "max_abs_logit_diff": max_diff, "logit_scale": scale, "images": int(len(labels))}
    problems = []
    if rule == "logits":
        if agreement < MIN_AGREEMENT_FP32:
            problems.append(f"top-1 agreement {agreement:.2%} < {MIN_AGREEMENT_FP32:.1%}")
        if not logits_ok:
            problems.append(f"max |Δlogit| {max_diff:.2e} > {fp32_rtol:g} × logit scale {scale:.3g}")
    elif rule == "agreement":
        if agreement < MIN_AGREEMENT_FP16:
            problems.append(f"top-1 agreement {agreement:.2%} < {MIN_AGREEMENT_FP16:.0%}")
    elif rule == "accuracy":
        retained = acc / ref_acc if ref_acc > 0 else float("nan")
        row["accuracy_retained"] = retained
        if not retained >= MIN_INT8_RETAINED:
            problems.append(f"accuracy {acc:.2%} is {retained:.2%} of fp32 {ref_acc:.2%} (< {MIN_INT8_RETAINED:.0%})")
    else:
        raise ValueError(f"{key}: unknown fidelity rule '{rule}'")
    row["passed"] = not problems
    row["message"] = "; ".join(problems)
    return row


def keeps_int8_rule(int8_acc: float, fp32_acc: float, what: str = "int8") -> tuple[bool, str]:
    """Whether int8 top-1 on the validation split keeps ≥ 99 % of fp32's, and that in one line (for the records of the
    steps that act when it does not: OpenVINO accuracy control, TFLite recalibration)."""
    retained = int8_acc / fp32_acc if fp32_acc > 0 else float("nan")
    keeps = not retained < MIN_INT8_RETAINED
    return keeps, f"{what} keeps {retained:.2%} of fp32 top-1 on validation ({'≥' if keeps else '<'} {MIN_INT8_RETAINED:.0%})"


def top1(path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 of an exported model on (x, y), run by its runtime."""
    return float(hits(path, x, y).mean())


def hits(path, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image correctness of an exported model on (x, y), run by its runtime (what auto choices are paired on)."""
    from pipeline.runtimes import load

    with load(path) as rt:
        return np.asarray(rt.predict(x).argmax(1) == y, bool)


def logits_match(got: np.ndarray, expected: np.ndarray, rtol: float) -> tuple[bool, float, float]:
    """fp32 agreement relative to the logits' scale: max |Δ| ≤ rtol × max(1, max |expected|).

    Float kernels differ by rounding that grows with the values (efficientnet_b0: 1.1e-4 on logits up
    to 3.1, a relative 3.6e-5), so an absolute bound fails sound exports of large-logit models."""
    if got.shape != expected.shape:
        return False, float("inf"), float("nan")
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    scale = max(1.0, float(np.abs(expected).max()) if expected.size else 0.0)
    return diff <= rtol * scale, diff, scale
