"""The student search end to end: Pareto front, workers 1 vs 2, teacher trainings, the recommendation vs the grid.

One space of 8 candidates (resnet8 at widths 1 and 2, mobile_half, mobilenetv2 at width 0.75, each distilled
with kd and rtk) from one resnet14 teacher, Fashion-MNIST at 16×16 (digits where Fashion-MNIST is not installed:
`apt-get install dataset-fashion-mnist`), target rpi4's rules (TFLite int8 by onnx2tf), latency on the host.

    python benchmarks/sweep.py                 # the three sweeps below, rows written to the JSON as each ends
    python benchmarks/sweep.py --table         # print the stored results

1. ``grid-w2``: the exhaustive grid (8 trials, no pruning), 2 workers × 1 thread: the Pareto front, the winner,
   teacher trainings counted from the stage store (goal: 1).
2. ``grid-w1``: the same grid, 1 worker × 1 thread, its own fresh store: wall time ratio w1 / w2 (goal ≥ 1.6).
3. ``nsga2``: NSGA-II with 5 trials and the median pruner, sharing grid-w2's store (identical candidates are
   linked, not retrained): does it recommend the grid's winner?
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline.artifacts import atomic_write_json  # noqa: E402

RESULTS = ROOT / "results" / "sweep.json"
RUNS = ROOT / "runs" / "sweep"
FASHION = Path("/usr/share/datasets/fashion-mnist")

SPACE = {
    "student": {"choice": [{"arch": "resnet8"}, {"arch": "resnet8", "arch_args": {"width": 2}},
                           {"arch": "mobile_half"}, {"arch": "mobilenetv2", "arch_args": {"width_mult": 0.75}}]},
    "distill.method": {"choice": ["kd", "rtk"]},
}


def base(dataset: str, epochs: int, max_train: int) -> dict:
    return {
        "data": {"dataset": dataset, "image_size": 16, "max_train": max_train, "max_test": 2000, "batch_size": 128,
                 "calibration_size": 128, "val_fraction": 0.05},
        "teacher": {"arch": "resnet14", "epochs": 2 * epochs},
        "distill": {"epochs": epochs, "seeds": [0]},
        "qat": {"enabled": False},
        "export": {"formats": ["onnx", "tflite_int8"], "layer_error_images": 0},
        # every candidate of this space runs on the Pi's CPU (the static check would cost one more onnx2tf each)
        "target": {"name": "rpi4", "check_before_training": False},
        "benchmark": {"warmup": 5, "min_runs": 30, "min_seconds": 0.3},
        "report": {"formats": ["json", "html"]},
    }


def sweep_file(folder: Path, name: str, recipe: dict, **more) -> Path:
    spec = {"name": name, "base": recipe, "space": SPACE, "objectives": ["top1", "p90_ms"],
            "constraints": {"max_p90_ms": 5.0}, "sweeps_dir": str(folder), **more}
    path = folder / f"{name}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(path: Path, workers: int) -> tuple[float, int, str]:
    env = {**os.environ, "PIPELINE_SWEEP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", "sweep", str(path), "--workers", str(workers)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (path.parent / f"{path.stem}.log").write_text(done.stdout + done.stderr)
    return seconds, done.returncode, (done.stderr.strip().splitlines() or [""])[-1]


def summarise(folder: Path, name: str, seconds: float, code: int, workers: int) -> dict:
    s = json.loads((folder / name / "sweep.json").read_text())
    front = sorted((r for r in s["trials"] if r.get("front_rank") == 0), key=lambda r: r["p90_ms"])
    return {
        "sweep": name, "workers": workers, "threads_per_worker": 1, "wall_s": round(seconds, 1), "exit": code,
        "sampler": s["sampler"], "counts": s["counts"], "recommended": s["recommended"], "verdict": s["verdict"],
        "recommended_params": next((r["params"] for r in s["trials"] if r["number"] == s["recommended"]), None),
        "teacher_trainings": s["shared_stages"].get("teacher", {}).get("computed", 0),
        "teacher_reused": s["shared_stages"].get("teacher", {}).get("fetched", 0),
        "teacher": s.get("teacher"),
        "front": [{"trial": r["number"], "params": r["params"], "top1": r["top1"], "top1_ci95": r["top1_ci95"],
                   "p90_ms": r["p90_ms"], "size_mb": r["size_mb"]} for r in front],
        "trials": [{"trial": r["number"], "state": r["state"], "params": r["params"], "top1": r["top1"],
                    "test_top1": r["test_top1"], "p90_ms": r["p90_ms"], "size_mb": r["size_mb"],
                    "why": r.get("pruned") or r.get("error"), "seconds": r.get("seconds")} for r in s["trials"]],
    }


def save(rows: list[dict], meta: dict) -> None:
    """Rows merge by sweep name with those already stored (re-running one sweep keeps the others)."""
    old = json.loads(RESULTS.read_text())["rows"] if RESULTS.is_file() else []
    mine = {r["sweep"] for r in rows}
    atomic_write_json(RESULTS, {"meta": meta, "rows": [r for r in old if r["sweep"] not in mine] + rows})


def table(results: dict) -> None:
    rows = {r["sweep"]: r for r in results["rows"]}
    print(f"dataset {results['meta']['dataset']}, {results['meta']['epochs']} distill epochs, "
          f"{results['meta']['max_train']} training images; latency: host CPU, rpi4 rules")
    print(f"{'sweep':10} {'workers':>7} {'wall s':>8} {'trials':>18} {'teacher trained':>16} recommended")
    for r in rows.values():
        c = r["counts"]
        print(f"{r['sweep']:10} {r['workers']:>7} {r['wall_s']:>8.1f} {c['COMPLETE']:>3} done {c['PRUNED']} pruned {c['FAIL']} failed "
              f"{r['teacher_trainings']:>10} ({r['teacher_reused']} reused)  {r['verdict']}")
    if "grid-w1" in rows and "grid-w2" in rows:
        print(f"speed-up 2 workers vs 1: {rows['grid-w1']['wall_s'] / rows['grid-w2']['wall_s']:.2f}×")
    if "grid-w2" in rows:
        print("Pareto front (grid-w2):")
        for f in rows["grid-w2"]["front"]:
            print(f"  trial {f['trial']:04d} {f['params']}: val top-1 {100 * f['top1']:.2f} % "
                  f"[{100 * f['top1_ci95'][0]:.1f}–{100 * f['top1_ci95'][1]:.1f}], p90 {f['p90_ms']:.3f} ms, {f['size_mb']:.3f} MB")
    if "nsga2" in rows and "grid-w2" in rows:
        same = rows["nsga2"]["recommended_params"] == rows["grid-w2"]["recommended_params"]
        print(f"NSGA-II (5 trials) recommends {rows['nsga2']['recommended_params']}; the exhaustive grid "
              f"{rows['grid-w2']['recommended_params']}: {'same winner' if same else 'DIFFERENT winner'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-train", type=int, default=3000)
    ap.add_argument("--only", nargs="*", default=["grid-w2", "grid-w1", "nsga2"])
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.table:
        table(json.loads(RESULTS.read_text()))
        return
    dataset = "fashion_mnist" if FASHION.is_dir() else "digits"
    recipe = base(dataset, args.epochs, args.max_train)
    meta = {"dataset": dataset, "epochs": args.epochs, "max_train": args.max_train, "space": SPACE, "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d")}
    rows: list[dict] = []
    plan = {
        "grid-w2": (RUNS / "a", 2, {"sampler": "grid", "budget": {"trials": 8}, "pruning": {"enabled": False}}),
        "grid-w1": (RUNS / "b", 1, {"sampler": "grid", "budget": {"trials": 8}, "pruning": {"enabled": False}}),
        "nsga2": (RUNS / "a", 1, {"sampler": "nsga2", "budget": {"trials": 5}}),  # shares grid-w2's store
    }
    for name in args.only:
        folder, workers, more = plan[name]
        shutil.rmtree(folder / name, ignore_errors=True)
        if name != "nsga2":
            shutil.rmtree(folder / ".store", ignore_errors=True)
        path = sweep_file(folder, name, recipe, **more)
        seconds, code, last = run(path, workers)
        print(f"{name}: {seconds:.0f}s exit {code} {last}", flush=True)
        rows.append(summarise(folder, name, seconds, code, workers))
        save(rows, meta)
    table(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    main()
