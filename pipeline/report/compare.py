"""Two runs side by side: accuracy, latency and size differences, as Markdown tables.

``compare(run_dir, baseline_dir)`` reads each run's ``report.json`` (the run folder's, else
``08_report/``'s, else it builds one from ``07_benchmark/benchmark.json``). Rows are matched by
model, artifact, thread setting and machine (host rows match host rows whatever the host's
name, so a re-run on another build server still lines up); a row only one run has is shown with
blanks. Signs: accuracy Δ in points (+ = run better), latency and size Δ in % (− = run smaller).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import read_json
from pipeline.errors import PipelineError
from pipeline.report.markdown import escape, table


def load_report(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    for path in (run_dir / "report.json", run_dir / "08_report" / "report.json"):
        if path.is_file():
            return read_json(path)
    bench = run_dir / "07_benchmark" / "benchmark.json"
    if bench.is_file():
        from pipeline.report.build import build_report

        return build_report(read_json(bench))
    raise PipelineError(f"{run_dir}: no report.json or 07_benchmark/benchmark.json; run the pipeline (or its benchmark stage) there first")


def compare(run_dir: Path, baseline_dir: Path) -> str:
    """A Markdown comparison of ``run_dir`` against ``baseline_dir``."""
    run, base = load_report(run_dir), load_report(baseline_dir)
    name_a, name_b = run["run"]["name"], base["run"]["name"]
    if name_a == name_b:
        name_a, name_b = Path(run_dir).name, Path(baseline_dir).name
    lines = [f"# {escape(name_a)} vs baseline {escape(name_b)}", ""]
    cpu_a, cpu_b = run["environment"]["host"].get("cpu"), base["environment"]["host"].get("cpu")
    if cpu_a != cpu_b:
        lines += [f"Note: different host CPUs ({cpu_a} vs {cpu_b}): host latency differences include the machine.", ""]
    if run["data"].get("images") != base["data"].get("images"):
        lines += [f"Note: accuracy on {run['data'].get('images')} vs {base['data'].get('images')} test images.", ""]

    acc_a = {r["stage"]: r for r in run["accuracy"]}
    acc_b = {r["stage"]: r for r in base["accuracy"]}
    rows = []
    for stage in list(acc_a) + [s for s in acc_b if s not in acc_a]:
        a, b = acc_a.get(stage, {}).get("top1"), acc_b.get(stage, {}).get("top1")
        label = (acc_a.get(stage) or acc_b.get(stage))["label"]
        rows.append([label, _pct(a), _pct(b), _delta_pts(a, b)])
    lines += ["## Accuracy (top-1 %)", "", table(["Stage", name_a, name_b, "Δ (pts)"], rows), ""]

    lat_a, lat_b = _by_key(run), _by_key(base)
    rows = []
    for key in list(lat_a) + [k for k in lat_b if k not in lat_a]:
        a, b = lat_a.get(key, {}), lat_b.get(key, {})
        model, artifact, threads, machine = key
        rows.append([
            model, artifact, machine, "all" if threads == 0 else str(threads),
            _ms(a, "p50"), _ms(b, "p50"), _delta_pct(_stat(a, "p50"), _stat(b, "p50")),
            _ms(a, "p90"), _ms(b, "p90"), _delta_pct(_stat(a, "p90"), _stat(b, "p90")),
            _mb(a.get("size_bytes")), _mb(b.get("size_bytes")), _delta_pct(a.get("size_bytes"), b.get("size_bytes")),
        ])
    headers = ["Model", "Format", "Machine", "Threads", f"p50 {name_a}", f"p50 {name_b}", "Δ p50",
               f"p90 {name_a}", f"p90 {name_b}", "Δ p90", f"MB {name_a}", f"MB {name_b}", "Δ size"]
    lines += ["## Latency (ms, batch 1) and size", "", table(headers, rows), ""]

    gates_a = {g["name"]: g for g in run["gates"]}
    gates_b = {g["name"]: g for g in base["gates"]}
    if gates_a or gates_b:
        rows = [[n, _gate(gates_a.get(n)), _gate(gates_b.get(n))] for n in list(gates_a) + [n for n in gates_b if n not in gates_a]]
        lines += ["## Gates", "", table(["Gate", name_a, name_b], rows), ""]
    return "\n".join(lines)


def _by_key(report: dict) -> dict[tuple, dict]:
    return {
        (r["model"], r["artifact"], r["threads"], "host" if r["where"] == "host" else r["device"]): r
        for r in report["latency"]
    }


def _stat(row: dict, name: str) -> float | None:
    return None if row.get("error") else (row.get("latency_ms") or {}).get(name)


def _ms(row: dict, name: str) -> str:
    if not row:
        return ""
    if row.get("error"):
        return "failed"
    v = _stat(row, name)
    return "" if v is None else f"{v:.3f}"


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _mb(x) -> str:
    return "" if x is None else f"{x / 1e6:.3f}"


def _delta_pts(a, b) -> str:
    return "" if a is None or b is None else f"{100 * (a - b):+.2f}"


def _delta_pct(a, b) -> str:
    return "" if a is None or b is None or b == 0 else f"{100 * (a / b - 1):+.1f}%"


def _gate(g: dict | None) -> str:
    if g is None:
        return ""
    value = "n/a" if g.get("value") is None else f"{g['value']:.3g}"
    return f"{'pass' if g['passed'] else 'FAIL'} ({value}, limit {g['limit']:g})"
