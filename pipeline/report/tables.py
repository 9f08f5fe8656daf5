"""The report's tables as plain data (headers, rows of strings): one source for Markdown, HTML and the console.

``summary`` follows Ultralytics' benchmark table (format, status, size, accuracy, latency,
speed-up), one row per artifact × machine × thread setting; ``stages`` is the accuracy chain
that shows where accuracy is lost; ``gates`` and ``target`` close the loop.
"""

from __future__ import annotations

from typing import Any

Table = tuple[list[str], list[list[str]]]
OK, FAILED = "✅", "❌"
SPEEDUP_NOTE = ("Speed-up vs teacher: the teacher's p50 over the row's, on the same machine at the same threads; the teacher "
                "timed as its fp32 ONNX export in ONNX Runtime where that row exists, else in PyTorch.")
DEVICE_NOTE = ("Device rows: top-1 on the bundle's test sample (its size is the row's `images`), measured on the board by the "
               "same method; speed-up vs teacher only where the teacher ran on that machine.")


def summary(report: dict[str, Any]) -> Table:
    headers = ["Model", "Format", "Machine", "Threads", "Status", "Size (MB)", "Top-1 (%)", "p50 (ms)", "p90 (ms)", "Speed-up vs teacher"]
    rows = []
    for r in report["latency"]:
        lat = r.get("latency_ms") or {}
        ok = not r.get("error")
        rows.append([
            r["model"],
            r["artifact"] + (" (deploy)" if r.get("deploy") else ""),
            _machine(r),
            _threads(r),
            OK if ok else f"{FAILED} {r['error']}",
            _mb(r.get("size_bytes")),
            _pct(r.get("accuracy")),
            _ms(lat.get("p50")) if ok else "",
            _ms(lat.get("p90")) if ok else "",
            _x(r.get("speedup_vs_teacher")),
        ])
    return headers, rows


def latency_details(report: dict[str, Any]) -> Table:
    headers = ["Model", "Format", "Machine", "Threads", "Engine", "Init (ms)", "First (ms)", "Mean (ms)", "Std (ms)",
               "p99 (ms)", "p50 end-to-end (ms)", "Runs", "RSS Δ (MB)", "Params", "MMACs"]
    rows = []
    for r in report["latency"]:
        if r.get("error"):
            continue
        lat = r.get("latency_ms") or {}
        rows.append([
            r["model"], r["artifact"], _machine(r), _threads(r), str(r.get("engine") or r.get("format") or ""),
            _ms(r.get("init_ms"), 1), _ms(r.get("first_ms")), _ms(lat.get("mean")), _ms(lat.get("std")), _ms(lat.get("p99")),
            _ms((r.get("e2e_latency_ms") or {}).get("p50")), str(r.get("runs", "")), _num(r.get("rss_delta_mb"), 1), _int(r.get("params")), _num(_div(r.get("macs"), 1e6), 2),
        ])
    return headers, rows


def stages(report: dict[str, Any]) -> Table:
    headers = ["Stage", "Top-1 (%)", "Made from", "Lost vs made-from (pts)", "Lost vs teacher (pts)", "Agree teacher (%)",
               "Agree fp32 student (%)", "Agree fake-quant (%)", "Engine"]
    rows = []
    for r in report["accuracy"]:
        a = r.get("agreement") or {}
        rows.append([
            r["label"],
            _pct(r["top1"]) if r.get("error") is None else f"{FAILED} {r['error']}",
            r.get("parent") or "",
            _signed(r.get("drop_vs_parent_pts")),
            _signed(r.get("drop_vs_teacher_pts")),
            _pct(a.get("teacher")),
            _pct(a.get("student_fp32")),
            _pct(a.get("student_fakequant")),
            str(r.get("engine") or ""),
        ])
    return headers, rows


def gates(report: dict[str, Any]) -> Table:
    headers = ["Gate", "Limit", "Value", "Result", "Message"]
    rows = [[g["name"], f"{g['limit']:g}", _num(g.get("value"), 3), OK if g["passed"] else f"{FAILED} failed", g["message"]]
            for g in report["gates"]]
    return headers, rows


def target(report: dict[str, Any]) -> Table:
    t = report.get("target") or {}
    rows = [[str(k), _short(v)] for k, v in t.items() if not isinstance(v, (list, dict)) or len(str(v)) < 200]
    return ["Key", "Value"], rows


def environment(report: dict[str, Any]) -> Table:
    env = report["environment"]
    headers = ["Machine", "Where", "CPU", "Cores (usable)", "Memory (MB)", "OS", "Runtimes"]
    rows = []
    for where, m in [("host", env["host"])] + [("device", d) for d in env.get("devices", [])]:
        versions = {**(m.get("runtimes") or {}), **(m.get("tools") or {})}
        rows.append([
            str(m.get("name")), where, str(m.get("cpu")), f"{m.get('cores')} ({m.get('usable_cores')})",
            str(m.get("memory_mb")), str(m.get("os")), ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        ])
    return headers, rows


def exported_weights(report: dict[str, Any]) -> str:
    """Which student weights the artifacts were made from, and why (the QAT guard's decision or the config)."""
    run = report["run"]
    return run.get("export_source_reason") or f"{run.get('export_source') or 'unknown'} weights"


def gates_verdict(report: dict[str, Any]) -> str:
    failed = [g for g in report["gates"] if not g["passed"]]
    if not report["gates"]:
        return "no gates configured"
    return "all gates passed" if not failed else f"{len(failed)} of {len(report['gates'])} gates FAILED"


def _machine(r: dict) -> str:
    return r["device"] if r["where"] == "host" else f"{r['device']} (device)"


def _threads(r: dict) -> str:
    t, used = r.get("threads"), r.get("threads_used")
    if t == 0:
        return f"all ({used})" if used else "all"
    return str(t)


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _ms(x, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _num(x, digits: int = 2) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _int(x) -> str:
    return "" if x is None else f"{x:,}"


def _mb(x) -> str:
    return "" if x is None else f"{x / 1e6:.3f}"


def _x(x) -> str:
    return "" if x is None else f"{x:.2f}×"


def _signed(x) -> str:
    return "" if x is None else f"{x:+.2f}"


def _div(x, d):
    return None if x is None else x / d


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 200 else s[:197] + "…"
