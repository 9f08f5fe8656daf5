"""The sweep report: ``sweeps/NAME/sweep.{json,md,html}`` and ``best.yaml``, read from the study, not from memory.

Verdict first: the recommended trial (the most accurate on the validation split among those that met every
constraint; a tie goes to the lower p90, then the smaller file), or "no trial met the constraints" (exit 3).
Then where latency was measured (the board, or the host CPU "not the target"), the Pareto front plot (top-1 with
its Wilson interval vs p90, every finished trial a point, the teacher as a reference, the constraint lines),
every trial sorted by front rank with a link to its run report, pruned and failed trials with why, the search
space, trials per worker, and how often the shared stages were computed. ``best.yaml`` is the recommended
trial's resolved config as a recipe: ``python -m pipeline run best.yaml`` reproduces its config hash.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from pipeline.artifacts import Manifest, atomic_write_bytes, atomic_write_json, read_json
from pipeline.report.stats import accuracy_interval
from pipeline.stage_metrics import TeacherMetrics
from pipeline.stages import stage_folder
from pipeline.sweep.spec import SweepSpec

SWEEP_FILES = {"json": "sweep.json", "md": "sweep.md", "html": "sweep.html"}
BEST_RECIPE = "best.yaml"


def trial_rows(study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append({
            "number": t.number, "state": t.state.name, "params": dict(t.params),
            "top1": a.get("top1"), "val_images": a.get("val_images"),
            "top1_ci95": accuracy_interval(a.get("top1"), a.get("val_images")),
            "test_top1": a.get("test_top1"), "p90_ms": a.get("p90_ms"), "p50_ms": a.get("p50_ms"),
            "size_mb": a.get("size_mb"), "params_count": a.get("params"), "macs": a.get("macs"),
            "fully_mapped": a.get("fully_mapped"), "meets_constraints": a.get("meets_constraints"),
            "latency_where": a.get("latency_where"), "latency_machine": a.get("latency_machine"),
            "run": a.get("run"), "worker": a.get("worker"), "config_hash": a.get("config_hash"),
            "pruned": a.get("pruned"), "pruned_at": a.get("pruned_at"), "error": a.get("error"),
            "retry_of": t.system_attrs.get("failed_trial"), "gates_failed": a.get("gates_failed"),
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None,
        })
    return rows


def pareto_ranks(rows: list[dict], objectives: list[str]) -> dict[int, int]:
    """trial number -> non-domination rank (0 = the front) over the complete trials."""
    sign = {"top1": -1.0, "p90_ms": 1.0, "size_mb": 1.0}
    done = [r for r in rows if r["state"] == "COMPLETE" and all(r.get(o) is not None for o in objectives)]
    vec = {r["number"]: [sign[o] * r[o] for o in objectives] for r in done}
    ranks, left, rank = {}, set(vec), 0
    while left:
        front = {n for n in left if not any(all(a <= b for a, b in zip(vec[m], vec[n])) and vec[m] != vec[n] for m in left)}
        for n in front:
            ranks[n] = rank
        left -= front
        rank += 1
    return ranks


def recommend(rows: list[dict]) -> dict | None:
    ok = [r for r in rows if r["state"] == "COMPLETE" and r.get("meets_constraints") and r.get("top1") is not None]
    return max(ok, key=lambda r: (r["top1"], -(r["p90_ms"] or 0.0), -(r["size_mb"] or 0.0))) if ok else None


def build(spec: SweepSpec, study, *, storage: str, sampler: str, store_counts: dict, device: str | None,
          threads: int = 1) -> dict[str, Any]:
    rows = trial_rows(study)
    ranks = pareto_ranks(rows, list(spec.objectives))
    for r in rows:
        r["front_rank"] = ranks.get(r["number"])
    rows.sort(key=lambda r: (r["front_rank"] is None, r["front_rank"] or 0, -(r["top1"] or 0), r["number"]))
    best = recommend(rows)
    where = {r["latency_where"] for r in rows if r.get("latency_where")}
    on_host = not device or where != {"device"}
    workers: dict[str, int] = {}
    for r in rows:
        if r.get("worker") and r["state"] in ("COMPLETE", "PRUNED", "FAIL"):
            workers[r["worker"]] = workers.get(r["worker"], 0) + 1
    teacher = teacher_reference(rows, spec.folder, threads)
    verdict = (f"recommended: trial {best['number']:04d} ({_params(best['params'])}): validation top-1 "
               f"{100 * best['top1']:.2f} %, p90 {best['p90_ms']:.3f} ms" if best else
               "no trial met the constraints")
    return {
        "name": spec.name, "verdict": verdict, "recommended": best["number"] if best else None,
        "latency_note": ("every latency is the host CPU's, not the target's: the ranking used the host CPU "
                         "(pass --device user@board to measure on the target)") if on_host else
                        f"latency measured on the target board ({device})",
        "objectives": list(spec.objectives), "constraints": spec.constraints.model_dump(mode="json"),
        "budget": spec.budget.model_dump(mode="json"), "sampler": sampler, "storage": storage,
        "space": spec.space_record()["space"],
        "counts": {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")},
        "trials_per_worker": workers, "shared_stages": store_counts, "teacher": teacher, "trials": rows,
    }


def teacher_reference(rows: list[dict], folder: Path, threads: int) -> dict[str, Any] | None:
    """The teacher as the plot's reference: its validation top-1 (its stage manifest) and its ONNX p90, measured
    once per sweep (trials time only their deploy artifact), at a worker's thread share, cached by the file's hash."""
    from pipeline.artifacts import sha256_file
    from pipeline.stages import TEACHER_ONNX

    for r in rows:
        run = Path(r["run"]) if r.get("run") else None
        if r["state"] != "COMPLETE" or run is None or not (run / "report.json").is_file():
            continue
        report = read_json(run / "report.json")
        manifest = Manifest.read(stage_folder(run, "teacher"))
        out = {"top1": TeacherMetrics.of(manifest.metrics if manifest else None).val_acc, "test_top1": next(
            (a["top1"] for a in report["accuracy"] if a["stage"] == "teacher_fp32"), None), "p90_ms": None, "artifact": None}
        onnx = run / "05_export" / TEACHER_ONNX
        if onnx.is_file():
            cache = folder / "teacher_latency.json"
            digest = sha256_file(onnx)
            known = read_json(cache) if cache.is_file() else {}
            if known.get("sha256") != digest or known.get("threads") != threads:
                known = {"sha256": digest, "threads": threads, **_time_once(onnx, run, threads)}
                atomic_write_json(cache, known)
            out.update(p90_ms=known["p90_ms"], p50_ms=known["p50_ms"], artifact="onnx", threads=threads)
        return out
    return None


def _time_once(onnx: Path, run: Path, threads: int) -> dict[str, float]:
    from pipeline.benchmark.latency import StopRule, measure_latency
    from pipeline.data import load_split
    from pipeline.runtimes import load

    x, _ = load_split(run / "01_data", "test", limit=64)
    res = measure_latency(lambda: load(onnx, threads=threads), x, warmup=5, rule=StopRule())
    close = getattr(res.pop("runtime"), "close", None)
    if callable(close):
        close()
    return {"p50_ms": res["latency_ms"]["p50"], "p90_ms": res["latency_ms"]["p90"]}


def write(spec: SweepSpec, summary: dict[str, Any]) -> dict[str, Path]:
    folder = spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    figure = pareto_png(spec, summary)
    paths = {k: folder / v for k, v in SWEEP_FILES.items()}
    atomic_write_json(paths["json"], summary)
    atomic_write_bytes(paths["md"], markdown(summary, has_figure=figure is not None).encode())
    atomic_write_bytes(paths["html"], to_html(summary, figure).encode())
    if figure is not None:
        atomic_write_bytes(folder / "pareto.png", figure)
    best = next((r for r in summary["trials"] if r["number"] == summary["recommended"]), None)
    if best is not None and best.get("run"):
        paths["best"] = write_best(folder, spec, Path(best["run"]))
    else:
        (folder / BEST_RECIPE).unlink(missing_ok=True)
    return paths


def write_best(folder: Path, spec: SweepSpec, run: Path) -> Path:
    """The recommended trial's resolved config as a recipe, named after the sweep, in the default runs folder."""
    import yaml

    cfg = read_json(run / "config.json")
    cfg.update(name=f"{spec.name}-best", runs_dir="runs")
    text = (f"# The recommended trial of sweep {spec.name} ({run}), as a recipe:\n"
            f"#   python -m pipeline run {folder / BEST_RECIPE}\n"
            "# reproduces its config hash (name and runs_dir are not part of it).\n")
    path = folder / BEST_RECIPE
    atomic_write_bytes(path, (text + yaml.safe_dump(cfg, sort_keys=False)).encode())
    return path


def table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The trials table, one source for Markdown and HTML."""
    headers = ["trial", "front", "state", "candidate", "val top-1 (95 % CI)", "p90 ms", "size MB", "meets", "why / report"]
    out = []
    for r in summary["trials"]:
        ci = r.get("top1_ci95")
        top = f"{100 * r['top1']:.2f} ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})" if r.get("top1") is not None and ci else "—"
        why = r.get("pruned") or r.get("error") or (f"retry of trial {r['retry_of']}" if r.get("retry_of") is not None else "")
        link = _rel(r.get("run"))
        out.append([f"{r['number']:04d}", "—" if r.get("front_rank") is None else str(r["front_rank"]), r["state"],
                    _params(r["params"]), top, _num(r.get("p90_ms"), 3), _num(r.get("size_mb"), 3),
                    {True: "yes", False: "no"}.get(r.get("meets_constraints"), "—"),
                    why or (f"{link}/report.html" if link else "")])
    return headers, out


def markdown(summary: dict[str, Any], has_figure: bool) -> str:
    lines = [f"# Sweep {summary['name']}", "", f"**{summary['verdict']}**", "", f"> {summary['latency_note']}", ""]
    lines += _facts(summary)
    if has_figure:
        lines += ["", "![Pareto front](pareto.png)"]
    headers, rows = table(summary)
    lines += ["", "## Trials (front rank 0 = the Pareto front)", "", "| " + " | ".join(headers) + " |",
              "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", "## Search space", ""] + [f"- `{k}`: {v}" for k, v in summary["space"].items()]
    return "\n".join(lines) + "\n"


def _facts(summary: dict[str, Any]) -> list[str]:
    c, shared, t = summary["counts"], summary["shared_stages"], summary.get("teacher") or {}
    lines = [f"- trials: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed (budget {summary['budget']['trials']}); "
             f"sampler {summary['sampler']}; storage {summary['storage']}",
             f"- objectives: {', '.join(summary['objectives'])}; constraints: "
             + (", ".join(f"{k} {v}" for k, v in summary["constraints"].items() if v not in (None, False)) or "none"),
             "- shared stages: " + (", ".join(f"{s} computed {n['computed']}× and reused {n['fetched']}×"
                                               for s, n in shared.items() if s in ("data", "teacher")) or "none recorded"),
             "- trials per worker: " + (", ".join(f"{w}: {n}" for w, n in summary["trials_per_worker"].items()) or "none")]
    if t.get("top1") is not None:
        lines.append(f"- teacher: validation top-1 {100 * t['top1']:.2f} %"
                     + (f", p90 {t['p90_ms']:.3f} ms (ONNX on the host, threads={t['threads']}, measured once for the sweep)"
                        if t.get("p90_ms") else ""))
    return lines


def to_html(summary: dict[str, Any], figure: bytes | None) -> str:
    from pipeline.report.html import CSS, _table

    e = lambda x: html.escape(str(x), quote=True)  # noqa: E731
    cls = "PASS" if summary["recommended"] is not None else "FAIL"
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>Sweep {e(summary['name'])}</title><style>{CSS}</style></head><body>",
             f"<h1>Sweep {e(summary['name'])}</h1>",
             f"<ul class=\"verdict {cls}\"><li><b>{e(summary['verdict'])}</b></li><li>{e(summary['latency_note'])}</li></ul>",
             "<ul>" + "".join(f"<li>{e(line[2:])}</li>" for line in _facts(summary)) + "</ul>"]
    if figure is not None:
        parts.append(f"<figure><img alt=\"Pareto front\" src=\"data:image/png;base64,{base64.b64encode(figure).decode()}\">"
                     "<figcaption class=\"note\">validation top-1 (Wilson 95 % bars) vs p90 latency; the front dashed; "
                     "the constraints as lines</figcaption></figure>")
    headers, rows = table(summary)
    parts += ["<h2>Trials (front rank 0 = the Pareto front)</h2>", _linked(_table(headers, rows), summary),
              "<h2>Search space</h2><ul>" + "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in summary["space"].items())
              + "</ul>", "</body></html>"]
    return "\n".join(parts)


def _linked(table_html: str, summary: dict[str, Any]) -> str:
    """Each run report path in the table becomes a link (relative to the sweep folder)."""
    for r in summary["trials"]:
        link = _rel(r.get("run"))
        if link:
            target = html.escape(f"{link}/report.html", quote=True)
            table_html = table_html.replace(f">{target}<", f"><a href=\"{target}\">{target}</a><", 1)
    return table_html


def pareto_png(spec: SweepSpec, summary: dict[str, Any]) -> bytes | None:
    from pipeline.report.plots import _plain_log_ticks, _plt, _png

    done = [r for r in summary["trials"] if r["state"] == "COMPLETE" and r.get("top1") is not None and r.get("p90_ms")]
    if not done:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for r in done:
        lo, hi = r["top1_ci95"] or (r["top1"], r["top1"])
        front = r.get("front_rank") == 0
        color = "#1a7f37" if r.get("meets_constraints") else "#888888"
        ax.errorbar(r["p90_ms"], 100 * r["top1"], yerr=[[100 * (r["top1"] - lo)], [100 * (hi - r["top1"])]],
                    fmt="o" if front else "s", color=color, ms=7 if front else 5, capsize=2, alpha=0.9)
        ax.annotate(f"{r['number']:04d}", (r["p90_ms"], 100 * r["top1"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    front = sorted((r for r in done if r.get("front_rank") == 0), key=lambda r: r["p90_ms"])
    ax.plot([r["p90_ms"] for r in front], [100 * r["top1"] for r in front], "--", color="#1a7f37", lw=1, label="Pareto front")
    if summary["recommended"] is not None:
        b = next(r for r in done if r["number"] == summary["recommended"])
        ax.scatter([b["p90_ms"]], [100 * b["top1"]], s=220, facecolors="none", edgecolors="#0969da", lw=2, label="recommended")
    t = summary.get("teacher") or {}
    if t.get("top1") is not None:
        ax.axhline(100 * t["top1"], color="#9a6700", ls=":", lw=1, label=f"teacher {100 * t['top1']:.1f} %")
    c = spec.constraints
    if c.max_p90_ms is not None:
        ax.axvline(c.max_p90_ms, color="#cf222e", lw=1, label=f"max_p90_ms {c.max_p90_ms:g}")
    if c.min_top1 is not None:
        ax.axhline(100 * c.min_top1, color="#cf222e", ls="-.", lw=1, label=f"min_top1 {100 * c.min_top1:g} %")
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    where = "board" if "device" in {r.get("latency_where") for r in done} else "host CPU, not the target"
    ax.set_xlabel(f"deploy artifact p90 latency, ms ({where})")
    ax.set_ylabel("validation top-1, %")
    ax.set_title(f"Sweep {spec.name}: {len(done)} finished trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1] if len(params) > 2 else k}={v}" for k, v in sorted(params.items()))


def _num(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _rel(run: str | None) -> str | None:
    """trials/NNNN: run folders sit under the sweep folder, so links stay valid when it is moved or mailed."""
    if not run:
        return None
    parts = Path(run).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else run

