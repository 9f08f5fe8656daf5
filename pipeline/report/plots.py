"""The report's figures as PNG bytes (matplotlib, Agg backend), for embedding as data: URIs.

* ``pareto``: top-1 vs p50 latency (log scale) of every artifact at the gates' thread setting,
  the teacher marked with a star, the Pareto front (nothing both faster and more accurate) dashed.
* ``stages``: top-1 of each stage of the accuracy chain, the teacher's as a reference line.
* ``latency``: per-call latency distributions (box: p25–p75, whiskers p1–p99) per thread setting.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_ticks(axis) -> None:
    """Log axis ticks as 0.5, 1, 2 rather than 5×10⁻¹ (minor ticks labelled only when the axis spans < 1 decade)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = axis.get_view_interval()
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}") if lo > 0 and hi / lo < 10 else NullFormatter())


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points no other point beats on both (lower latency, higher accuracy)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto(report: dict[str, Any]) -> bytes | None:
    threads = report["run"].get("gate_threads")
    rows = [r for r in report["latency"] if not r.get("error") and r.get("accuracy") is not None and r.get("latency_ms")
            and (r["where"] == "device" or r["threads"] == threads)]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pts = [(r["latency_ms"]["p50"], 100 * r["accuracy"]) for r in rows]
    for k, (r, (lat, acc)) in enumerate(zip(rows, pts)):
        teacher = r["model"] == "teacher"
        ax.scatter(lat, acc, s=220 if teacher else 60, marker="*" if teacher else ("o" if r["where"] == "host" else "s"),
                   color="#d62728" if teacher else ("#1f77b4" if r["where"] == "host" else "#2ca02c"),
                   edgecolors="black", linewidths=0.5, zorder=3)
        label = f"teacher ({r['artifact']})" if teacher else ("student (pytorch)" if r["artifact"] == "pytorch" else r["artifact"])
        if r["where"] == "device":
            label += f" @{r['device']}"
        ax.annotate(label, (lat, acc), textcoords="offset points", xytext=(6, 4 if k % 2 == 0 else -10), fontsize=8)
    host = [i for i, r in enumerate(rows) if r["where"] == "host"]
    front = [host[j] for j in pareto_front([pts[i] for i in host])]
    if len(front) > 1:
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="gray", zorder=2, label="Pareto front (host)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.autoscale_view()
    _plain_log_ticks(ax.xaxis)
    shown = "" if threads is None else f", threads={threads or 'all'}"
    ax.set_xlabel(f"p50 latency, batch 1 (ms, log scale){shown}")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Accuracy vs latency (★ teacher)")
    ax.grid(True, which="both", alpha=0.3)
    return _png(fig)


def stages(report: dict[str, Any]) -> bytes | None:
    rows = [r for r in report["accuracy"] if r.get("top1") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    labels = [r["label"] for r in rows][::-1]
    values = [100 * r["top1"] for r in rows][::-1]
    colors = ["#d62728" if r["model"] == "teacher" else "#1f77b4" for r in rows][::-1]
    ax.barh(labels, values, color=colors)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    teacher = next((100 * r["top1"] for r in rows if r["stage"] == "teacher_fp32"), None)
    if teacher is not None:
        ax.axvline(teacher, color="#d62728", ls="--", lw=1)
    lo = min(values)
    ax.set_xlim(max(0.0, lo - max(5.0, (100 - lo) * 0.5)), 100.5)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_title("Accuracy through the stages")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def latency(report: dict[str, Any], samples: dict[str, np.ndarray]) -> bytes | None:
    """Box plots of the stored per-call samples (host rows only: device files carry summaries)."""
    from pipeline.report.schema import sample_key

    by_threads: dict[int, list[tuple[str, np.ndarray]]] = {}
    for r in report["latency"]:
        s = samples.get(sample_key(r))
        if s is not None and len(s):
            by_threads.setdefault(r["threads"], []).append((f"{r['model']} {r['artifact']}", np.asarray(s)))
    if not by_threads:
        return None
    plt = _plt()
    n = max(len(v) for v in by_threads.values())
    fig, axes = plt.subplots(len(by_threads), 1, figsize=(7.5, (0.4 * n + 1.2) * len(by_threads)), squeeze=False,
                             layout="constrained")
    for ax, (threads, series) in zip(axes[:, 0], sorted(by_threads.items(), key=lambda kv: kv[0] or 10**9)):
        ax.boxplot([s for _, s in series], orientation="horizontal", whis=(1, 99), showfliers=False)
        ax.set_yticks(range(1, len(series) + 1), [name for name, _ in series], fontsize=8)
        ax.set_xscale("log")
        ax.autoscale_view()
        _plain_log_ticks(ax.xaxis)
        ax.set_xlabel("latency per call (ms, log)")
        ax.set_title(f"threads={threads if threads else 'all'}")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle("Latency distributions (box p25–p75, whiskers p1–p99)")
    return _png(fig)
