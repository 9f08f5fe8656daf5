"""The report's figures as PNG bytes (matplotlib, Agg backend), for embedding as data: URIs.

* ``pareto``: top-1 (with Wilson 95 % bars) vs p50 latency (log scale), one panel per machine at the
  thread setting the gates read there, one point per artifact, the deploy artifact ringed, the
  teacher a star, labels placed without overlaps, the Pareto front (nothing both faster and more
  accurate) dashed.
* ``stages``: top-1 of each stage of the accuracy chain with its interval, the teacher's as a reference line.
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
    fig = pareto_figure(report)
    return None if fig is None else _png(fig)


def pareto_figure(report: dict[str, Any]):
    """Top-1 (Wilson 95 % bars) vs p50, one panel per machine at the thread setting the gates read there, one point per
    artifact; the deploy artifact ringed and labelled, the teacher a star, labels placed so none overlaps another."""
    from pipeline.benchmark.gates import device_threads
    from pipeline.target import TARGETS

    rules = TARGETS.get(report["run"]["target"])
    measured = [r for r in report["latency"] if not r.get("error") and r.get("accuracy") is not None and r.get("latency_ms")]
    panels: dict[tuple[str, str], list[dict]] = {}
    for r in measured:
        panels.setdefault((r["where"], r["device"]), []).append(r)
    for key, rows in list(panels.items()):
        threads = report["run"].get("gate_threads") if key[0] == "host" else device_threads(rows, rules.threads if rules else 0)
        panels[key] = [r for r in rows if r["threads"] == threads]
        if not panels[key]:
            del panels[key]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.2), squeeze=False)
    for ax, ((where, machine), rows) in zip(axes[0], panels.items()):
        _pareto_panel(ax, rows, where, machine)
    fig.suptitle("Accuracy vs latency (★ teacher, ringed: the deploy artifact; bars: Wilson 95 % intervals)", fontsize=10)
    fig.tight_layout()
    for ax, rows in zip(axes[0], panels.values()):
        first = [i for i, r in enumerate(rows) if r.get("deploy")] + [i for i, r in enumerate(rows) if r["model"] == "teacher"]
        place_labels(ax, [(r["latency_ms"]["p50"], 100 * r["accuracy"]) for r in rows], [_point_label(r) for r in rows], first=first)
    return fig


def _pareto_panel(ax, rows: list[dict], where: str, machine: str) -> None:
    pts = [(r["latency_ms"]["p50"], 100 * r["accuracy"]) for r in rows]
    lows, highs = [], []
    for r, (lat, acc) in zip(rows, pts):
        ci = r.get("accuracy_ci95") or [r["accuracy"], r["accuracy"]]
        lows.append(100 * ci[0])
        highs.append(100 * ci[1])
        teacher, deploy = r["model"] == "teacher", bool(r.get("deploy"))
        color = "#d62728" if teacher else "#2ca02c" if deploy else "#1f77b4"
        ax.errorbar(lat, acc, yerr=[[acc - 100 * ci[0]], [100 * ci[1] - acc]], fmt="none", ecolor=color, alpha=0.6,
                    capsize=3, zorder=2)
        ax.scatter(lat, acc, s=260 if teacher else 150 if deploy else 55, marker="*" if teacher else "o", color=color,
                   edgecolors="black", linewidths=2.0 if deploy else 0.5, zorder=4)
    front = pareto_front(pts)
    if len(front) > 1:
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="gray", zorder=1, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    lo_x, hi_x = min(p[0] for p in pts), max(p[0] for p in pts)
    ax.set_xlim(lo_x / 1.6, hi_x * 1.6)
    span = max(max(highs) - min(lows), 1.0)
    ax.set_ylim(max(0.0, min(lows) - 0.25 * span), min(100.0, max(highs) + 0.25 * span))
    _plain_log_ticks(ax.xaxis)
    threads = rows[0]["threads"]
    used = rows[0].get("threads_used")
    shown = "all" + (f" ({used})" if used else "") if threads == 0 else str(threads)
    kind = "host CPU, not the target" if where == "host" else "device"
    ax.set_xlabel(f"p50 latency (ms, log) on {machine} ({kind}), batch 1, threads={shown}")
    ax.set_ylabel(f"top-1 accuracy (%) on {rows[0].get('images')} images")
    ax.grid(True, which="both", alpha=0.3)


def _point_label(r: dict) -> str:
    name = f"teacher ({r['artifact']})" if r["model"] == "teacher" else ("student pytorch" if r["artifact"] == "pytorch" else r["artifact"])
    return f"{name} (deploy)" if r.get("deploy") else name


LABEL_BOX = {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8}  # readable over grid and front lines


LEADER = {"arrowstyle": "-", "color": "#555", "lw": 0.8, "shrinkA": 0, "shrinkB": 4}  # from the words to their point
# label offsets around a point, nearest first: right, above/below-right, above, below, left… (× the ring's radius)
AROUND = ((1, 0.5), (1, 1.6), (1, -1.6), (0, 1.8), (0, -1.8), (-1, 0.5), (-1, 1.6), (-1, -1.6), (1, 2.8), (-1, 2.8),
          (1, -2.8), (-1, -2.8))


def place_labels(ax, points: list[tuple[float, float]], labels: list[str], fontsize: int = 8,
                 first: list[int] = ()) -> list:
    """Annotate each data point with its label at the first nearby spot where it overlaps no other label or point.

    Candidates ring the point at growing distances, each joined to its point by a thin leader line;
    ``first`` are placed before the others (they get the nearest spots), the rest left to right.
    The figure's layout must be final (labels are placed in display coordinates). Returns the texts.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    dots = [ax.transData.transform(p) for p in points]
    taken = [_box(x - 8, y - 8, x + 8, y + 8) for x, y in dots]
    texts = []
    order = list(first) + sorted((i for i in range(len(points)) if i not in first), key=lambda i: (dots[i][0], -dots[i][1]))
    for i in order:
        best = None
        for radius in (9, 18, 28, 40, 54, 70):
            for dx, dy in AROUND:
                text = ax.annotate(labels[i], points[i], xytext=(dx * radius, dy * radius * 0.5), textcoords="offset points",
                                   fontsize=fontsize, ha="left" if dx > 0 else "right" if dx < 0 else "center", va="center",
                                   arrowprops=LEADER, zorder=5, bbox=LABEL_BOX)
                box = _words_box(text, renderer)
                inside = axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 and axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1
                if inside and not any(box.overlaps(t) for t in taken):
                    best = (text, box)
                    break
                text.remove()
            if best:
                break
        if best is None:  # crowded: the far corner of the last ring, kept rather than dropped
            text = ax.annotate(labels[i], points[i], xytext=(70, 70 * 0.5 * (1 if i % 2 else -1)), textcoords="offset points",
                               fontsize=fontsize, arrowprops=LEADER, zorder=5, bbox=LABEL_BOX)
            best = (text, _words_box(text, renderer))
        texts.append(best[0])
        taken.append(best[1])
    return texts


def _words_box(text, renderer):
    """Display box of an annotation's words alone (its own get_window_extent adds the leader line)."""
    from matplotlib.text import Text

    text.update_positions(renderer)
    return Text.get_window_extent(text, renderer).padded(2)


def _box(x0, y0, x1, y1):
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])


def stages(report: dict[str, Any]) -> bytes | None:
    rows = [r for r in report["accuracy"] if r.get("top1") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    labels = [r["label"] for r in rows][::-1]
    values = [100 * r["top1"] for r in rows][::-1]
    colors = ["#d62728" if r["model"] == "teacher" else "#1f77b4" for r in rows][::-1]
    cis = [r.get("top1_ci95") or [r["top1"], r["top1"]] for r in rows][::-1]
    errors = [[v - 100 * ci[0] for v, ci in zip(values, cis)], [100 * ci[1] - v for v, ci in zip(values, cis)]]
    ax.barh(labels, values, color=colors, xerr=errors, error_kw={"ecolor": "#444", "capsize": 2, "lw": 0.8})
    for y, (v, ci) in enumerate(zip(values, cis)):
        ax.text(100 * ci[1], y, f" {v:.2f}", va="center", fontsize=8)
    teacher = next((100 * r["top1"] for r in rows if r["stage"] == "teacher_fp32"), None)
    if teacher is not None:
        ax.axvline(teacher, color="#d62728", ls="--", lw=1)
    lo = min(100 * ci[0] for ci in cis)
    ax.set_xlim(max(0.0, lo - max(5.0, (100 - lo) * 0.5)), 104)
    ax.set_xlabel(f"top-1 accuracy (%) on {rows[0]['images']} test images, Wilson 95 % intervals")
    ax.set_title("Accuracy through the stages")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def latency(report: dict[str, Any], samples: dict[str, np.ndarray]) -> bytes | None:
    """Box plots of the stored per-call samples (host rows only: device files carry summaries)."""
    from pipeline.benchmark.rows import sample_key

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
