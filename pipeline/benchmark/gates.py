"""Closing the loop: the run fails (exit 3, after its report is written) when the deployed student misses a gate.

"The int8 student" is the target's deploy artifact (``TargetRules.deploy_artifact``, e.g.
``tflite_int8`` for the Edge TPU); its latency is read at the target's thread count when that
was measured, else at the largest thread count measured. Accuracy differences are percentage
points; speed-up is teacher p50 / student p50 on the host at those same threads, the teacher
timed in ONNX Runtime (its ONNX export) where it has that row, else in PyTorch.
Every configured gate produces one entry ``{name, limit, value, passed, message}``; a gate that
cannot be evaluated (its artifact failed or was not measured) fails and says why.
"""

from __future__ import annotations

from typing import Any

from pipeline.benchmark.latency import resolve_threads

TEACHER_BASELINES = ("onnx", "pytorch")  # the teacher row speed-ups divide by, first one present


def teacher_baseline(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Among the rows of one machine at one thread setting, the teacher row speed-ups divide by."""
    measured = {r["artifact"]: r for r in rows if r["model"] == "teacher" and not r.get("error") and r.get("latency_ms")}
    return next((measured[a] for a in TEACHER_BASELINES if a in measured), None)


def gate_threads(measured: list[int], target_threads: int) -> int | None:
    """The thread setting (as asked) whose rows the gates read: the target's, else the most cores measured."""
    if not measured:
        return None
    want = resolve_threads(target_threads)
    for t in measured:
        if resolve_threads(t) == want:
            return t
    return max(measured, key=lambda t: (resolve_threads(t), t == 0))


def evaluate_gates(
    gates: dict[str, float | None],
    *,
    accuracy: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    deploy_artifact: str,
    threads: int | None,
) -> list[dict[str, Any]]:
    """One result per gate that has a limit; ``accuracy``/``latency`` are report rows (host rows are read)."""
    top1 = {r["stage"]: r["top1"] for r in accuracy if r.get("top1") is not None}
    host = {
        (r["model"], r["artifact"]): r
        for r in latency
        if r.get("where") == "host" and r.get("threads") == threads and not r.get("error") and r.get("latency_ms")
    }
    deploy_lat = host.get(("student", deploy_artifact))
    teacher_lat = teacher_baseline(list(host.values()))
    baseline = teacher_lat["artifact"] if teacher_lat else TEACHER_BASELINES[-1]
    d, t, s = top1.get(deploy_artifact), top1.get("teacher_fp32"), top1.get("student_fp32")
    where = f"at threads={threads}" if threads is not None else "(no latency measured)"

    results = []
    for name, limit in gates.items():
        if limit is None:
            continue
        if name == "max_drop_vs_teacher":
            value = _round(_pts(t, d))
            what = f"{deploy_artifact} top-1 {_pct(d)} vs teacher {_pct(t)}: drop {_num(value)} pts"
            missing = _missing(d is None and deploy_artifact, t is None and "teacher_fp32", kind="accuracy")
            passed = value is not None and value <= limit
            bound = f"limit {limit:g} pts"
        elif name == "max_int8_drop_vs_fp32":
            value = _round(_pts(s, d))
            what = f"{deploy_artifact} top-1 {_pct(d)} vs fp32 student {_pct(s)}: drop {_num(value)} pts"
            missing = _missing(d is None and deploy_artifact, s is None and "student_fp32", kind="accuracy")
            passed = value is not None and value <= limit
            bound = f"limit {limit:g} pts"
        elif name == "max_p90_latency_ms":
            value = _round(deploy_lat["latency_ms"]["p90"] if deploy_lat else None)
            what = f"{deploy_artifact} p90 {_num(value, 3)} ms {where}"
            missing = _missing(deploy_lat is None and deploy_artifact, kind="latency")
            passed = value is not None and value <= limit
            bound = f"limit {limit:g} ms"
        elif name == "min_speedup_vs_teacher":
            value = _round(teacher_lat["latency_ms"]["p50"] / deploy_lat["latency_ms"]["p50"] if deploy_lat and teacher_lat else None)
            what = f"teacher ({baseline}) p50 / {deploy_artifact} p50 = {_num(value)}× {where}"
            missing = _missing(deploy_lat is None and deploy_artifact, teacher_lat is None and "teacher", kind="latency")
            passed = value is not None and value >= limit
            bound = f"limit ≥ {limit:g}×"
        else:
            raise ValueError(f"unknown gate {name!r}")
        verdict = "passed" if passed else "FAILED"
        message = f"{name} {verdict}: {what} ({bound})" if not missing else f"{name} FAILED: {missing} ({bound})"
        results.append({
            "name": name,
            "limit": float(limit),
            "value": value,
            "passed": bool(passed),
            "message": message,
        })
    return results


def _missing(*names, kind: str) -> str | None:
    names = [n for n in names if n]
    return f"no {kind} for {', '.join(names)} (failed or not measured; see the report)" if names else None


def _round(x: float | None) -> float | None:
    """6 decimals, before comparing: 97% − 92% is 5.000000000000004 points in floats, and must pass a 5-point limit."""
    return None if x is None else round(float(x), 6)


def _pts(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else (before - after) * 100.0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
