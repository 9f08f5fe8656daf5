"""The default run, cold (issue 28, item 8 "cheap trials"): wall seconds of ``python -m pipeline run edge_tpu.yaml``
from an empty runs folder, per stage, N times.

Each repeat runs the pipeline in a fresh process with ``--fresh`` into a new temporary ``runs_dir``, so
nothing is cached, and reads back every stage's ``manifest.json`` (``seconds``), the precheck's seconds
(its cache file) and the process's wall and CPU (user + system, children included) seconds. The rest of
the wall time (``other``) is the interpreter and import start-up, the run loop and the console.

    python benchmarks/default_run.py --repeats 2                       # this checkout, 2 cold runs
    python benchmarks/default_run.py --repeats 1 --label before --tree /tmp/wt-before   # another checkout
    python benchmarks/default_run.py --table                           # the stored rows
    python benchmarks/default_run.py --trained runs/edge_tpu --label after --repeats 2   # the stages after training only

``--trained RUN`` times what a change outside training moves, at a fraction of the cost: the precheck
(``python -m pipeline check`` into an empty runs folder) and ``--from export`` in a copy of a finished run
(its data, teacher, distill and QAT stages reused: their cache keys do not read the benchmark section).

Rows merge into results/default_run.json by label. Timings come from a shared 2-core machine whose other
load varies from run to run: compare labels measured in the same period, alternating them; CPU seconds
move less with other load than wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline.artifacts import atomic_write_json  # noqa: E402

RESULTS = ROOT / "results" / "default_run.json"
STAGES = ("data", "precheck", "teacher", "distill", "qat", "export", "target", "benchmark", "report")


def cold_run(tree: Path, recipe: str, overrides: list[str]) -> dict:
    """One cold run of ``recipe`` with the checkout at ``tree``: per-stage, wall and CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="default-run-") as tmp:
        cmd = [sys.executable, "-m", "pipeline", "run", recipe, "--fresh", "--set", f"runs_dir={tmp}"]
        for o in overrides:
            cmd += ["--set", o]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode not in (0, 3):  # 3: a gate failed, the run is complete
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"run failed with exit {done.returncode}")
        run_dir = next(p for p in Path(tmp).iterdir() if p.is_dir())
        stages = {}
        for manifest in sorted(run_dir.glob("0*_*/manifest.json")):
            m = json.loads(manifest.read_text())
            stages[m["stage"]] = round(m["seconds"], 2)
        for check in (run_dir / "cache").glob("precheck-*.json"):
            stages["precheck"] = json.loads(check.read_text()).get("seconds")
        export = json.loads((run_dir / "05_export" / "manifest.json").read_text())["metrics"]
        bench = json.loads((run_dir / "07_benchmark" / "manifest.json").read_text())["metrics"]
    counted = sum(v for v in stages.values() if v)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "stages_s": {s: stages.get(s) for s in STAGES},
        "other_s": round(wall - counted, 2),
        "export_steps_s": export.get("seconds", {}),
        "load_avg_1min_before": round(load, 2),
        "deploy_accuracy": bench.get("deploy_accuracy"),
        "deploy_val_top1": bench.get("deploy_val_top1"),
        "teacher_accuracy": bench.get("teacher_accuracy"),
    }


def after_training(tree: Path, recipe: str, trained: Path, overrides: list[str]) -> dict:
    """The precheck and the stages from export on, cold, with the checkout at ``tree`` (``--trained``)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    sets = [a for o in overrides for a in ("--set", o)]
    stages: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="default-run-") as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU of both commands
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        _run([sys.executable, "-m", "pipeline", "check", recipe, "--set", f"runs_dir={tmp}/check", *sets], tree, env)
        check_wall = time.perf_counter() - t0
        for check in Path(tmp, "check").glob("*/cache/precheck-*.json"):
            stages["precheck"] = json.loads(check.read_text()).get("seconds")
        run_dir = Path(tmp) / "runs" / trained.name
        shutil.copytree(trained, run_dir, ignore=shutil.ignore_patterns("0[5-8]_*", "*.partial", "report*"))
        t0 = time.perf_counter()
        _run([sys.executable, "-m", "pipeline", "run", recipe, "--from", "export", "--set", f"runs_dir={tmp}/runs",
              "--set", f"name={trained.name}", *sets], tree, env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        for manifest in sorted(run_dir.glob("0[5-8]_*/manifest.json")):
            m = json.loads(manifest.read_text())
            stages[m["stage"]] = round(m["seconds"], 2)
        export = json.loads((run_dir / "05_export" / "manifest.json").read_text())["metrics"]
        bench = json.loads((run_dir / "07_benchmark" / "manifest.json").read_text())["metrics"]
    counted = sum(v for k, v in stages.items() if v and k != "precheck")
    return {
        "wall_s": round(wall + check_wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "stages_s": {s: stages.get(s) for s in STAGES},
        "other_s": round(wall - counted, 2),
        "check_wall_s": round(check_wall, 2),
        "export_steps_s": export.get("seconds", {}),
        "load_avg_1min_before": round(load, 2),
        "deploy_accuracy": bench.get("deploy_accuracy"),
        "deploy_val_top1": bench.get("deploy_val_top1"),
        "teacher_accuracy": bench.get("teacher_accuracy"),
    }


def _run(cmd: list[str], tree: Path, env: dict) -> None:
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 3):  # 3: a gate failed, the run is complete
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"{' '.join(cmd[2:5])} failed with exit {done.returncode}")


def summary(runs: list[dict]) -> dict:
    """Medians over the repeats."""
    def med(xs):
        xs = [x for x in xs if x is not None]
        return round(statistics.median(xs), 2) if xs else None

    return {
        "wall_s": med([r["wall_s"] for r in runs]),
        "cpu_s": med([r["cpu_s"] for r in runs]),
        "stages_s": {s: med([r["stages_s"][s] for r in runs if r["stages_s"].get(s) is not None]) for s in STAGES},
        "other_s": med([r["other_s"] for r in runs]),
    }


def table(rows: dict) -> str:
    labels = list(rows)
    head = "| stage | " + " | ".join(labels) + " |"
    lines = [head, "|---|" + "---:|" * len(labels)]
    for s in (*STAGES, "other"):
        key = "other_s" if s == "other" else None
        cells = [rows[lbl]["median"][key] if key else rows[lbl]["median"]["stages_s"].get(s) for lbl in labels]
        lines.append(f"| {s} | " + " | ".join("" if c is None else f"{c:.1f}" for c in cells) + " |")
    for name, key in (("**total (wall)**", "wall_s"), ("CPU (user+sys)", "cpu_s")):
        lines.append(f"| {name} | " + " | ".join("" if rows[lbl]["median"][key] is None else f"{rows[lbl]['median'][key]:.1f}"
                                                  for lbl in labels) + " |")
    lines.append("| runs | " + " | ".join(str(len(rows[lbl]["runs"])) for lbl in labels) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--recipe", default="edge_tpu.yaml")
    ap.add_argument("--tree", type=Path, default=ROOT.parent, help="the checkout to run (default: this one)")
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeat)")
    ap.add_argument("--trained", type=Path, help="a finished run folder: time the precheck and the stages from export on only")
    ap.add_argument("--table", action="store_true", help="print the stored rows and exit")
    args = ap.parse_args()
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
    if not args.table:
        runs = []
        for i in range(args.repeats):
            if args.trained:
                runs.append(after_training(args.tree.resolve(), args.recipe, args.trained.resolve(), args.set))
            else:
                runs.append(cold_run(args.tree.resolve(), args.recipe, args.set))
            print(f"{args.label} run {i + 1}/{args.repeats}: {runs[-1]['wall_s']:.1f} s wall, {runs[-1]['cpu_s']:.1f} s CPU, "
                  f"{runs[-1]['stages_s']}", flush=True)
        label = f"{args.label}, after training" if args.trained else args.label
        row = stored["rows"].setdefault(label, {"runs": []})
        row["runs"] += [{**r, "recipe": args.recipe, "overrides": args.set, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                        for r in runs]
        row["median"] = summary(row["runs"])
        stored["machine"] = f"{os.cpu_count()} cores, {os.uname().machine}"
        atomic_write_json(RESULTS, stored)
    print(table(stored["rows"]))


if __name__ == "__main__":
    main()
