"""Two runs side by side, for people and for CI: accuracy, latency, size, gates and the config difference.

``comparison(run_dir, baseline_dir)`` reads each run's ``report.json`` (the run folder's, else
``08_report/``'s, else it builds one from ``07_benchmark/benchmark.json``) and returns a JSON-able
dict; ``render_markdown`` prints it. Runs are labelled by name, folder and config hash (two
folders are often both named after the recipe). Rows are matched by model, artifact, thread
setting and machine (host rows match host rows whatever the host's name); a row only one run has
is shown with blanks.

Signs follow the main report's "Lost vs … (pts)": **positive = the run is worse than the
baseline**: accuracy lost in points (baseline − run), latency and size grown in % (run / baseline − 1).

The regression check reads the deploy artifact: its top-1 on the host's test split, and its p50
on the target device when both runs measured it there (same device name, same threads), else on
the host at the gate threads. It regressed when it lost more than ``max_accuracy_drop`` points, or
its p50 grew more than ``max_latency_increase`` percent, or it failed where the baseline ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import read_json, read_json_file
from pipeline.errors import PipelineError
from pipeline.report.markdown import escape, table
from pipeline.report.model import Report, problem
from pipeline.stages import REPORT_FILES, RESULTS_FILE, STAGE_FOLDERS, stage_folder

KIND, VERSION = "comparison", 1
SIGN = "positive = the run is worse than the baseline (accuracy lost in points; latency and size grown in %)"
MAX_ACCURACY_DROP, MAX_LATENCY_INCREASE = 0.5, 10.0


def load_report(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PipelineError(f"{run_dir}: no such run folder")
    for path in (run_dir / REPORT_FILES["json"], stage_folder(run_dir, "report") / REPORT_FILES["json"]):
        if path.is_file():
            remedy = f"write it again: python -m pipeline report {run_dir}"
            report = read_json_file(path, remedy)
            if (wrong := problem(Report, report)) is not None:
                raise PipelineError(f"{path}: not a report this pipeline reads ({wrong}); {remedy}")
            return report
    bench = stage_folder(run_dir, "benchmark") / RESULTS_FILE
    if bench.is_file():
        from pipeline.report.build import build_report, read_records

        return build_report(read_json(bench), records=read_records(run_dir))
    raise PipelineError(f"{run_dir}: no {REPORT_FILES['json']} or {STAGE_FOLDERS['benchmark']}/{RESULTS_FILE}; "
                        "run the pipeline (or its benchmark stage) there first")


def comparison(run_dir: Path, baseline_dir: Path, *, max_accuracy_drop: float = MAX_ACCURACY_DROP,
               max_latency_increase: float = MAX_LATENCY_INCREASE, run: dict | None = None,
               baseline: dict | None = None) -> dict[str, Any]:
    """The comparison of ``run_dir`` against ``baseline_dir`` (already loaded reports may be passed)."""
    run = run if run is not None else load_report(run_dir)
    base = baseline if baseline is not None else load_report(baseline_dir)
    notes = []
    cpu_a, cpu_b = run["environment"]["host"].get("cpu"), base["environment"]["host"].get("cpu")
    if cpu_a != cpu_b:
        notes.append(f"different host CPUs ({cpu_a} vs {cpu_b}): host latency differences include the machine")
    if run["data"].get("images") != base["data"].get("images"):
        notes.append(f"accuracy on {run['data'].get('images')} vs {base['data'].get('images')} test images")
    from pipeline.run_folder import config_diff

    configs = _config(run, run_dir), _config(base, baseline_dir)
    if None in configs:
        notes.append("a run has no recorded config (run before config.json was kept): config difference unknown")

    acc_a, acc_b = {r["stage"]: r for r in run["accuracy"]}, {r["stage"]: r for r in base["accuracy"]}
    accuracy = []
    for stage in list(acc_a) + [s for s in acc_b if s not in acc_a]:
        a, b = acc_a.get(stage, {}).get("top1"), acc_b.get(stage, {}).get("top1")
        accuracy.append({"stage": stage, "label": (acc_a.get(stage) or acc_b.get(stage))["label"], "run": a, "baseline": b,
                         "lost_pts": _round(100 * (b - a)) if a is not None and b is not None else None})

    lat_a, lat_b = _by_key(run), _by_key(base)
    latency = []
    for key in list(lat_a) + [k for k in lat_b if k not in lat_a]:
        a, b = lat_a.get(key, {}), lat_b.get(key, {})
        model, artifact, threads, machine = key
        latency.append({
            "model": model, "artifact": artifact, "machine": machine, "threads": threads,
            "run_error": a.get("error") if a else None, "baseline_error": b.get("error") if b else None,
            "run_p50": _stat(a, "p50"), "baseline_p50": _stat(b, "p50"), "p50_slower_pct": _grown(_stat(a, "p50"), _stat(b, "p50")),
            "run_p90": _stat(a, "p90"), "baseline_p90": _stat(b, "p90"), "p90_slower_pct": _grown(_stat(a, "p90"), _stat(b, "p90")),
            "run_bytes": a.get("size_bytes"), "baseline_bytes": b.get("size_bytes"),
            "larger_pct": _grown(a.get("size_bytes"), b.get("size_bytes")),
        })

    gates_a, gates_b = {g["name"]: g for g in run["gates"]}, {g["name"]: g for g in base["gates"]}
    gates = [{"name": n, "run": _gate(gates_a.get(n)), "baseline": _gate(gates_b.get(n))}
             for n in list(gates_a) + [n for n in gates_b if n not in gates_a]]
    return {
        "kind": KIND,
        "version": VERSION,
        "sign": SIGN,
        "run": _side(run, run_dir, configs[0]),
        "baseline": _side(base, baseline_dir, configs[1]),
        "notes": notes,
        "config_diff": [{"key": k, "run": a, "baseline": b} for k, a, b in config_diff(*configs)]
        if None not in configs else [],
        "accuracy": accuracy,
        "latency": latency,
        "gates": gates,
        "regression": regression(run, base, lat_a, lat_b, max_accuracy_drop, max_latency_increase),
    }


def regression(run: dict, base: dict, lat_a: dict, lat_b: dict, max_accuracy_drop: float, max_latency_increase: float) -> dict[str, Any]:
    """Did the deploy artifact lose accuracy or speed beyond the limits? Each finding is one sentence naming it."""
    deploy = run["run"]["deploy_artifact"]
    found = []
    a = next((r.get("top1") for r in run["accuracy"] if r["stage"] == deploy), None)
    b = next((r.get("top1") for r in base["accuracy"] if r["stage"] == deploy), None)
    lost = _round(100 * (b - a)) if a is not None and b is not None else None
    if lost is not None and lost > max_accuracy_drop:
        found.append(f"{deploy} top-1 {100 * a:.2f}% vs baseline {100 * b:.2f}%: lost {lost:.2f} pts (limit {max_accuracy_drop:g})")
    elif a is None and b is not None:
        found.append(f"{deploy} has no top-1 in the run (failed), {100 * b:.2f}% in the baseline")

    key = next((k for k in _deploy_keys(run) if _stat(lat_a.get(k, {}), "p50") is not None and _stat(lat_b.get(k, {}), "p50") is not None), None)
    grown = where = None
    if key is not None:
        pa, pb = _stat(lat_a[key], "p50"), _stat(lat_b[key], "p50")
        grown = _grown(pa, pb)
        where = f"{key[1]} on {'the host' if key[3] == 'host' else key[3]} at threads={'all' if key[2] == 0 else key[2]}"
        if grown is not None and grown > max_latency_increase:
            found.append(f"{where}: p50 {pa:.3f} ms vs baseline {pb:.3f} ms: +{grown:.1f}% (limit {max_latency_increase:g}%)")
    else:
        failed = [k for k in _deploy_keys(run) if (lat_a.get(k) or {}).get("error") and _stat(lat_b.get(k, {}), "p50") is not None]
        if failed:
            found.append(f"{failed[0][1]} failed in the run ({lat_a[failed[0]]['error']}) but ran in the baseline")
    return {
        "deploy_artifact": deploy,
        "max_accuracy_drop_pts": max_accuracy_drop,
        "max_latency_increase_pct": max_latency_increase,
        "accuracy_lost_pts": lost,
        "p50_slower_pct": grown,
        "latency_compared": where,
        "regressed": found,
        "passed": not found,
    }


def render_markdown(comp: dict[str, Any]) -> str:
    a, b = escape(comp["run"]["label"]), escape(comp["baseline"]["label"])
    short_a, short_b = "run", "baseline"
    lines = [f"# {escape(comp['run']['name'])} vs baseline {escape(comp['baseline']['name'])}", "",
             f"- run: {a}, verdict {comp['run']['verdict']}", f"- baseline: {b}, verdict {comp['baseline']['verdict']}",
             f"- signs: {comp['sign']}", *[f"- note: {n}" for n in comp["notes"]], ""]
    reg = comp["regression"]
    head = "no regression" if reg["passed"] else "REGRESSED"
    lines += [f"## Deploy artifact ({reg['deploy_artifact']}): {head}", "",
              f"Limits: lose at most {reg['max_accuracy_drop_pts']:g} top-1 pts, p50 grows at most {reg['max_latency_increase_pct']:g}% "
              f"({reg['latency_compared'] or 'latency not compared: no deploy row measured in both runs'}).", ""]
    lines += [f"- REGRESSED: {m}" for m in reg["regressed"]] + ([""] if reg["regressed"] else [])
    lines += ["## Config difference", ""]
    if comp["config_diff"]:
        lines += [table(["Key", short_a, short_b], [[d["key"], _v(d["run"]), _v(d["baseline"])] for d in comp["config_diff"]]), ""]
    else:
        lines += ["Unknown (a run has no recorded config)." if any("config" in n for n in comp["notes"]) else "Same config.", ""]
    rows = [[r["label"], _pct(r["run"]), _pct(r["baseline"]), _signed(r["lost_pts"])] for r in comp["accuracy"]]
    lines += ["## Accuracy (top-1 %)", "", table(["Stage", short_a, short_b, "Lost vs baseline (pts)"], rows), ""]
    rows = []
    for r in comp["latency"]:
        rows.append([r["model"], r["artifact"], r["machine"], "all" if r["threads"] == 0 else str(r["threads"]),
                     _ms(r, "run", "p50"), _ms(r, "baseline", "p50"), _signed(r["p50_slower_pct"], "%", 1),
                     _ms(r, "run", "p90"), _ms(r, "baseline", "p90"), _signed(r["p90_slower_pct"], "%", 1),
                     _mb(r["run_bytes"]), _mb(r["baseline_bytes"]), _signed(r["larger_pct"], "%", 1)])
    headers = ["Model", "Format", "Machine", "Threads", "p50 run", "p50 baseline", "Slower p50", "p90 run", "p90 baseline",
               "Slower p90", "MB run", "MB baseline", "Larger"]
    lines += ["## Latency (ms, batch 1) and size", "", table(headers, rows), ""]
    if comp["gates"]:
        lines += ["## Gates", "", table(["Gate", short_a, short_b], [[g["name"], g["run"], g["baseline"]] for g in comp["gates"]]), ""]
    return "\n".join(lines)


def _side(report: dict, run_dir: Path, config: dict | None) -> dict[str, Any]:
    from pipeline.run_folder import config_hash

    name = report["run"]["name"]
    digest = report["run"].get("config_hash") or (config_hash(config) if config else None)
    label = f"{name} ({run_dir}" + (f", config {digest}" if digest else ", config unknown") + ")"
    verdict = (report.get("verdict") or {}).get("status") or "unknown (report schema 1)"
    return {"label": label, "name": name, "folder": str(run_dir), "config_hash": digest, "created": report.get("created"),
            "verdict": verdict}


def _config(report: dict, run_dir: Path) -> dict | None:
    if report.get("config"):
        return report["config"]
    from pipeline.run_folder import recorded_config

    return recorded_config(Path(run_dir))


def _deploy_keys(report: dict) -> list[tuple]:
    """Latency keys of the deploy artifact the check reads, first choice first: the target device's, then the host's."""
    h, run = report.get("headline") or {}, report["run"]
    keys = []
    if h.get("latency_where") == "device":
        keys.append(("student", h.get("device_artifact"), h.get("latency_threads"), h.get("latency_machine")))
    keys.append(("student", run["deploy_artifact"], run.get("gate_threads"), "host"))
    return keys


def _by_key(report: dict) -> dict[tuple, dict]:
    return {
        (r["model"], r["artifact"], r["threads"], "host" if r["where"] == "host" else r["device"]): r
        for r in report["latency"]
    }


def _stat(row: dict, name: str) -> float | None:
    return None if not row or row.get("error") else (row.get("latency_ms") or {}).get(name)


def _gate(g: dict | None) -> str:
    if g is None:
        return ""
    status = g.get("status") or ("PASS" if g["passed"] else "FAIL")
    value = "n/a" if g.get("value") is None else f"{g['value']:.3g}"
    return f"{status} ({value}, limit {g['limit']:g})"


def _grown(a, b) -> float | None:
    return None if a is None or b is None or b == 0 else _round(100 * (a / b - 1))


def _round(x: float) -> float:
    return round(float(x), 6)


def _ms(r: dict, side: str, stat: str) -> str:
    if r[f"{side}_error"]:
        return "failed"
    v = r[f"{side}_{stat}"]
    return "" if v is None else f"{v:.3f}"


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _mb(x) -> str:
    return "" if x is None else f"{x / 1e6:.3f}"


def _signed(x, unit: str = "", digits: int = 2) -> str:
    return "" if x is None else f"{x:+.{digits}f}{unit}"


def _v(x) -> str:
    return "(absent)" if x is None else str(x)
