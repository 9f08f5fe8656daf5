"""Distillation methods on Fashion-MNIST: top-1 (mean ± std over seeds) and training cost per row.

Every row runs the pipeline's own data → teacher → distill stages with the same budget; only
the row's config overrides differ. A teacher is trained once per teacher configuration and
shared by all rows (file-locked, so several invocations may run side by side). Results are
merged into ``benchmarks/results/distill_methods.json`` row by row, so methods added later
append their rows without re-running the others.

    apt-get install dataset-fashion-mnist          # the real 60k/10k IDX files
    python benchmarks/distill_methods.py                     # every row
    python benchmarks/distill_methods.py --rows kd,at --seeds 0 1 2
    python benchmarks/distill_methods.py --table             # print the merged table only
    python benchmarks/distill_methods.py --cost --threads 2  # per-step cost of each row, timed alone
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline.artifacts import atomic_write_json, hash_json  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from pipeline.run import run_pipeline, stage_dir  # noqa: E402

RESULTS = ROOT / "results" / "distill_methods.json"
RUNS = ROOT / "runs"

# The fixed budget every row shares. Teacher resnet56 (0.86M params) is 11× the resnet8
# student (78k). The teacher trains on the whole training split (54k images), the students
# on an 8k subset of it: the data-limited setting distillation is for, and it keeps a
# 3-seed row to a few minutes on 2 cores. 16×16 inputs; mean/std fixed so teacher and
# student runs normalise identically.
BUDGET = {
    "data": {"dataset": "fashion_mnist", "image_size": 16, "max_train": 8000, "max_test": 5000,
             "val_fraction": 0.05, "augment": ["crop", "flip"], "batch_size": 128, "calibration_size": 128,
             "mean": [0.2868], "std": [0.3217]},
    "teacher_data": {"max_train": None},  # what the teacher's data section changes
    "teacher": {"arch": "resnet56", "epochs": 6, "lr": 0.1},
    "student": {"arch": "resnet8"},
    "distill": {"epochs": 8, "lr": 0.1},
    "target": {"check_before_training": False},
}

# row name -> config overrides (dotted keys). Method issues add their rows here.
ROWS: dict[str, dict] = {
    "none": {"distill.method": "none"},
    "kd": {"distill.method": "kd"},
    "at": {"distill.method": "at"},
    "at-w100": {"distill.method": "at", "distill.w_feat": 100.0},  # a tenth of AT's published β
    "fitnet": {"distill.method": "fitnet"},
    "ama": {"distill.method": "ama"},  # module after layer2 replaces layer3; w_feat 10
    "ama-w100": {"distill.method": "ama", "distill.w_feat": 100.0},  # FitNet's hint weight
    "ama-feat0": {"distill.method": "ama", "distill.w_feat": 0.0},  # ablation: KD from the adapted teacher only
    "mhkd": {"distill.method": "mhkd"},  # beta 0.5
    "mhkd-b0.25": {"distill.method": "mhkd", "distill.options.beta": 0.25},
    "mhkd-b1": {"distill.method": "mhkd", "distill.options.beta": 1.0},
    "afd": {"distill.method": "afd"},  # teacher queries over student stages; w_feat 200, KD 0.9
    "rtk-learned": {"distill.method": "rtk", "distill.options.form": "learned"},  # top-2 of the 3 teacher keys
    "rtk-cosine": {"distill.method": "rtk", "distill.options.form": "cosine"},
    "rtk-learned-k1": {"distill.method": "rtk", "distill.options.form": "learned", "distill.options.k": 1},
    "rtk-learned-k3": {"distill.method": "rtk", "distill.options.form": "learned", "distill.options.k": 3},  # no filtering
    "rtk-learned-kd0": {"distill.method": "rtk", "distill.w_kd": 0.0},  # feature term alone, as the at row
    "rtk-feat0": {"distill.method": "rtk", "distill.w_feat": 0.0},  # control: AFD/RTK's CE 1 + KD 0.9, no feature term
    # HMAT: β 1000, λ_p 1000, λ_c 300 (each term ≈ the AT term at init); single-attention ablations; λ sweep ×0.1 / ×10
    "hmat": {"distill.method": "hmat"},
    "hmat-position": {"distill.method": "hmat", "distill.options.activation": False, "distill.options.channel": False},
    "hmat-activation": {"distill.method": "hmat", "distill.options.position": False, "distill.options.channel": False},  # AT on layer2+3
    "hmat-channel": {"distill.method": "hmat", "distill.options.position": False, "distill.options.activation": False},
    "hmat-lp100": {"distill.method": "hmat", "distill.options.lambda_p": 100.0},
    "hmat-lp10000": {"distill.method": "hmat", "distill.options.lambda_p": 10000.0},
    "hmat-lc30": {"distill.method": "hmat", "distill.options.lambda_c": 30.0},
    "hmat-lc3000": {"distill.method": "hmat", "distill.options.lambda_c": 3000.0},
    # the hierarchy against AT on the same stages at a tenth of the weights (β 1000 dominates CE here)
    "hmat-x0.1": {"distill.method": "hmat", "distill.options.beta": 100.0, "distill.options.lambda_p": 100.0, "distill.options.lambda_c": 30.0},
    "hmat-activation-b100": {"distill.method": "hmat", "distill.options.position": False, "distill.options.channel": False, "distill.options.beta": 100.0},
    # expressive teacher (ICC): {plain, expressive} teacher × {kd, icc} student; λ_t 1, λ_s 1, T 4
    "icc": {"distill.method": "icc"},
    "kd-expressive": {"distill.method": "kd", "teacher.regularizer": "icc"},
    "icc-expressive": {"distill.method": "icc", "teacher.regularizer": "icc"},
    "icc-ls10": {"distill.method": "icc", "distill.options.lambda_s": 10.0},
    "shufflenet-none": {"distill.method": "none", "teacher.arch": "shufflenetv2_1_0", "student.arch": "shufflenetv2_0_5"},
    "shufflenet-kd": {"distill.method": "kd", "teacher.arch": "shufflenetv2_1_0", "student.arch": "shufflenetv2_0_5"},
    "shufflenet-icc-expressive": {"distill.method": "icc", "teacher.regularizer": "icc",
                                  "teacher.arch": "shufflenetv2_1_0", "student.arch": "shufflenetv2_0_5"},
}


def row_config(row: str, seeds: list[int], teacher_checkpoint: str | None = None) -> dict:
    raw = json.loads(json.dumps(BUDGET))
    raw.pop("teacher_data")
    raw["runs_dir"] = str(RUNS)
    raw["name"] = f"fmnist-{row}"
    for dotted, value in ROWS[row].items():
        *parents, leaf = dotted.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    raw["distill"]["seeds"] = seeds
    if teacher_checkpoint:
        raw["teacher"] = {"checkpoint": teacher_checkpoint}
    return raw


@contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_teacher(row: str) -> tuple[str, dict]:
    """Train (or reuse) the teacher this row asks for; returns its checkpoint and metrics."""
    raw = row_config(row, [0])
    data = {**raw["data"], **BUDGET["teacher_data"]}
    teacher_raw = {"data": data, "teacher": raw["teacher"], "target": raw["target"], "runs_dir": str(RUNS)}
    teacher_raw["name"] = "teacher-" + hash_json({"data": data, "teacher": raw["teacher"]})[:10]
    cfg = validate_config(teacher_raw, source="distill_methods.py")
    with locked(RUNS / f"{teacher_raw['name']}.lock"):
        manifests = run_pipeline(cfg, until="teacher")
    return str(stage_dir(cfg, "teacher") / "teacher.pt"), manifests["teacher"].metrics


def run_row(row: str, seeds: list[int]) -> dict:
    checkpoint, teacher_metrics = ensure_teacher(row)
    cfg = validate_config(row_config(row, seeds, checkpoint), source=f"distill_methods.py row {row}")
    t0 = time.perf_counter()
    manifests = run_pipeline(cfg, until="distill")
    m = manifests["distill"].metrics
    return {
        "method": m["method"],
        "overrides": ROWS[row],
        "top1_mean": 100 * m["test_acc_mean"],
        "top1_std": 100 * m["test_acc_std"],
        "per_seed": {str(r["seed"]): 100 * r["test_acc"] for r in m["seeds"]},
        "seconds_per_epoch": m["seconds_per_epoch"],
        "teacher_ms_per_batch": sum(r["teacher_ms_per_batch"] for r in m["seeds"]) / len(m["seeds"]),
        "teacher_top1": 100 * teacher_metrics["test_acc"],
        "teacher_arch": cfg.teacher.arch if not cfg.teacher.checkpoint else row_config(row, [0])["teacher"]["arch"],
        "student_arch": cfg.student.arch,
        "student_params": m["student_params"],
        "teacher_params": m["teacher_params"],
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "prepare": {k: v for r in m["seeds"][:1] for k, v in r.items() if k.startswith("prepare_")},
    }


def measure_cost(row: str, steps: int, warmup: int = 5) -> dict:
    """Per-step training cost of a row, timed alone: the distill stage's own setup (``setup_seed``)
    and step, on real training batches. Epoch times measured while other rows share the machine
    are noisy; this is the number to compare methods' speed by (run it on an idle machine)."""
    import torch

    from pipeline.distill.stage import setup_seed
    from pipeline.distill.trainer import freeze, supervising_teacher
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.train.data import training_data
    from pipeline.train.loop import make_optimizer

    checkpoint, _ = ensure_teacher(row)
    cfg = validate_config(row_config(row, [0], checkpoint), source=f"distill_methods.py row {row}")
    run_pipeline(cfg, until="data")
    data = training_data(stage_dir(cfg, "data"), cfg.data)
    teacher, _ = load_checkpoint(Path(checkpoint))
    freeze(teacher)
    supervisor, teacher_run, _ = supervising_teacher(teacher, cfg.distill)  # the teacher forward the stage runs
    setup = setup_seed(cfg, data, teacher, 0, cfg.run_dir / "cache", supervisor, teacher_run)
    params = [*setup.student.parameters(), *setup.criterion.parameters()]
    opt = make_optimizer(params, cfg.distill)
    bs = cfg.data.batch_size
    x_all, y_all = data.train.tensors
    setup.student.train()
    setup.criterion.train()
    times = []
    for i in range(warmup + steps):
        j = (i * bs) % (len(y_all) - bs)
        x, y = x_all[j : j + bs], y_all[j : j + bs]
        if i == warmup:
            setup.step.teacher_seconds, setup.step.batches = 0.0, 0
        t0 = time.perf_counter()
        loss, _ = setup.step(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    setup.remove_taps()
    batches = -(-len(y_all) // bs)
    ms = 1e3 * float(sum(times) / len(times))
    return {"ms_per_step": ms, "teacher_ms_per_batch": setup.step.teacher_ms_per_batch,
            "seconds_per_epoch_est": ms * batches / 1e3, "steps": steps, "batch_size": bs, "torch_threads": torch_threads()}


def cost_table(data: dict) -> str:
    lines = ["| row | method | ms / step | teacher ms / batch | s / epoch (est.) | top-1 % |", "|---|---|---|---|---|---|"]
    costs = data.get("cost", {})
    for name in sorted(costs, key=lambda n: list(ROWS).index(n) if n in ROWS else len(ROWS)):
        c = costs[name]
        r = data.get("rows", {}).get(name, {})
        top1 = f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}" if r else "–"
        lines.append(f"| {name} | {r.get('method', '')} | {c['ms_per_step']:.1f} | {c['teacher_ms_per_batch']:.1f} "
                     f"| {c['seconds_per_epoch_est']:.1f} | {top1} |")
    return "\n".join(lines)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def merge(row: str, result: dict, seeds: list[int]) -> None:
    with locked(RESULTS.with_suffix(".lock")):
        data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
        data["budget"] = BUDGET
        data["rows"][row] = {**result, "seeds": seeds}
        atomic_write_json(RESULTS, data)


def table(data: dict) -> str:
    rows = data.get("rows", {})
    # Δ against the student trained alone with the same architecture (resnet8 rows vs none, shufflenet vs shufflenet-none)
    alone = {r["student_arch"]: r["top1_mean"] for r in rows.values() if r["method"] == "none"}
    lines = [
        "| row | method | teacher → student | top-1 % (mean ± std) | Δ vs student alone | s/epoch (under load) | teacher ms/batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(rows, key=lambda n: list(ROWS).index(n) if n in ROWS else len(ROWS)):  # in ROWS order
        r = rows[name]
        base = alone.get(r["student_arch"])
        delta = f"{r['top1_mean'] - base:+.2f}" if base is not None else "–"
        lines.append(
            f"| {name} | {r['method']} | {r['teacher_arch']} ({r['teacher_top1']:.2f}) → {r['student_arch']} "
            f"| {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {delta} | {r['seconds_per_epoch']:.1f} | {r['teacher_ms_per_batch']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--table", action="store_true", help="print the merged results and exit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch's default)")
    ap.add_argument("--cost", action="store_true", help="time --steps training steps of each row alone (no training run)")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.cost:
        for row in args.rows.split(","):
            if row not in ROWS:
                ap.error(f"unknown row {row!r} (rows: {', '.join(ROWS)})")
            cost = measure_cost(row, args.steps)
            with locked(RESULTS.with_suffix(".lock")):
                data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
                data.setdefault("cost", {})[row] = cost
                atomic_write_json(RESULTS, data)
            print(f"{row}: {cost['ms_per_step']:.1f} ms/step (teacher {cost['teacher_ms_per_batch']:.1f} ms)", flush=True)
        print(cost_table(json.loads(RESULTS.read_text())))
        return 0
    if not args.table:
        for row in args.rows.split(","):
            if row not in ROWS:
                ap.error(f"unknown row {row!r} (rows: {', '.join(ROWS)})")
            result = {**run_row(row, args.seeds), "torch_threads": torch_threads()}
            merge(row, result, args.seeds)
            print(f"{row}: {result['top1_mean']:.2f} ± {result['top1_std']:.2f}", flush=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
    print(table(data))
    if data.get("cost"):
        print()
        print(cost_table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
