"""PTQ vs QAT int8 with the old and the new QAT defaults, on three datasets, two students, three seeds.

For each dataset, student and seed, the pipeline's own stages run once up to distillation (a
resnet20 teacher trained once per dataset supervises), then three exports of the same distilled
student are scored on the test split by the export stage's fidelity check:

- PTQ: the distilled weights straight to int8 (``export.source: distill``);
- QAT old: the QAT stage as it shipped before (BN statistics frozen from epoch 1 at the full
  learning rate, ranges frozen from epoch 2), its weights exported (``export.source: qat``);
- QAT new: the current defaults (BN statistics track the batches), its weights exported; and the
  guard's decision (``export.source: auto``) with its validation numbers.

TFLite int8 comes from onnx2tf, OpenVINO int8 from NNCF; both calibrate on the same recorded
subset. Fashion-MNIST and MNIST run at their native 28×28 (where the old defaults collapsed),
digits at the edge_tpu recipe's 16×16.

    python benchmarks/qat_vs_ptq.py                                  # everything (hours on 2 cores)
    python benchmarks/qat_vs_ptq.py --datasets digits --students resnet8 --seeds 0
    python benchmarks/qat_vs_ptq.py --table                          # print the stored results

``--paths`` (issue 22) compares the int8 paths instead, on the distilled weights (PTQ) of each
student and seed: TFLite by onnx2tf and by litert-torch (needs PIPELINE_LITERT_PYTHON, see
docker/requirements-litert.txt), OpenVINO by NNCF (with accuracy control when plain int8 keeps
< 99 % of fp32 on validation), ONNX Runtime QDQ; each against fp32 on the test split, plus the
worst layer of the TFLite and of the OpenVINO int8 model (their ``layer_error.json``). Target rpi4 (int8 I/O, per-channel),
the int8 I/O that both TFLite converters make.

    PIPELINE_LITERT_PYTHON=/opt/litert-venv/bin/python python benchmarks/qat_vs_ptq.py --paths --datasets digits

``--keep-float`` (issue 29) runs every int8 path that allows float (rpi4: TFLite by onnx2tf, OpenVINO by NNCF,
ONNX Runtime QDQ) with ``export.keep_float`` off (all-int8; OpenVINO's accuracy control off too) and ``auto``
(accuracy control auto after it): test top-1 ÷ fp32, layers kept in float, p50 ratio (1 thread) auto ÷ all-int8;
beside it the Edge TPU's integer-only int8 (its remedies: recalibration), and in seed 0 the per-op profile's sum
against the whole model's p50 for OpenVINO and ONNX Runtime int8.

    python benchmarks/qat_vs_ptq.py --keep-float --datasets digits,fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline.artifacts import atomic_write_json  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from pipeline.formats.layer_names import short_name  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402

RESULTS = ROOT / "results" / "qat_vs_ptq.json"
RUNS = ROOT / "runs"
INT8 = ("tflite_int8", "openvino_int8")
DATASETS = {
    "digits": {"dataset": "digits", "image_size": 16},
    "fashion_mnist": {"dataset": "fashion_mnist", "max_train": 8000, "max_test": 2000},
    "mnist": {"dataset": "mnist", "max_train": 8000, "max_test": 2000},
}
STUDENTS = ("resnet8", "mobile_half")
COMMON = {
    "teacher": {"arch": "resnet20", "epochs": 8, "lr": 0.05},
    "distill": {"method": "kd", "epochs": 8, "lr": 0.05},
    "target": {"name": "edge_tpu", "check_before_training": False},
    "benchmark": {"gates": {}},
}
# the QAT section as it shipped before this change, and the current defaults (all other keys default)
QAT_VARIANTS = {
    "qat_old": {"freeze_bn_epoch": 1, "lr_after_bn_freeze": 1.0, "freeze_observer_epoch": 2},
    "qat_new": {},
}


# --keep-float decides on ≥ 500 validation images where the data has them (issue 29): digits' default 10 % is 144
DECISION_SPLIT = {"digits": {"val_fraction": 0.35}}  # 503 of digits' 1438 non-test images


def teacher_checkpoint(dataset: str, data_extra: dict | None = None) -> str:
    """The dataset's teacher, trained once (a run folder of its own) and loaded by every student run."""
    tag = "-dec" if data_extra else ""
    raw = {"name": f"qvp-teacher-{dataset}{tag}", "runs_dir": str(RUNS),
           "data": {**DATASETS[dataset], "calibration_size": 256, **(data_extra or {})},
           "teacher": COMMON["teacher"], "target": COMMON["target"]}
    run_pipeline(validate_config(raw, source=f"qat_vs_ptq teacher {dataset}"), until="teacher")
    return str(RUNS / raw["name"] / "02_teacher" / "teacher.pt")


def config(dataset: str, student: str, seed: int, qat: dict, source: str, data_extra: dict | None = None) -> dict:
    return {
        "name": f"qvp-{dataset}-{student}-s{seed}{'-dec' if data_extra else ''}",
        "runs_dir": str(RUNS),
        "data": {**DATASETS[dataset], "calibration_size": 256, **(data_extra or {})},
        **COMMON,
        "teacher": {"checkpoint": teacher_checkpoint(dataset, data_extra)},
        "student": {"arch": student},
        "distill": {**COMMON["distill"], "seeds": [seed]},
        "qat": qat,
        "export": {"formats": ["onnx", *INT8], "source": source, "teacher_onnx": False},
    }


def export_accuracies(manifests: dict) -> dict:
    fidelity = manifests["export"].metrics["fidelity"]
    return {k: 100 * fidelity[k]["accuracy"] for k in INT8 if fidelity.get(k, {}).get("accuracy") is not None}


def run_one(dataset: str, student: str, seed: int) -> dict:
    """One seed: the distilled student's fp32, PTQ int8, and int8 after each QAT variant."""
    out: dict = {}
    for variant, qat in QAT_VARIANTS.items():
        cfg = validate_config(config(dataset, student, seed, qat, "qat"), source=f"qat_vs_ptq {dataset} {student} s{seed}")
        m = run_pipeline(cfg, start="export", until="export")  # training cached when unchanged; exports measured anew
        q = m["qat"].metrics
        out["fp32"] = 100 * m["distill"].metrics["test_acc"]
        out[variant] = {"fakequant": 100 * q["fakequant_accuracy"], "fp32_qat_weights": 100 * q["fp32_acc_after"],
                        **export_accuracies(m), "guard": q["guard"]}
        if variant == "qat_new":
            out["ptq"] = export_accuracies(run_pipeline(validate_config(config(dataset, student, seed, qat, "distill")),
                                                        start="export", until="export"))
    return out


PATHS_RESULTS = ROOT / "results" / "int8_paths.json"
WORST_OF = ("tflite_int8", "openvino_int8")  # the formats whose per-layer error the table names
ONNX2TF, LITERT = {"tflite_converter": "onnx2tf"}, {"tflite_converter": "litert_torch"}  # each converter forced
PATHS = {  # column -> (export config, format key)
    "TFLite (onnx2tf)": (ONNX2TF, "tflite_int8"),
    "TFLite (litert-torch)": (LITERT, "tflite_int8"),
    "OpenVINO (NNCF, accuracy control auto)": (ONNX2TF, "openvino_int8"),
    "ONNX Runtime QDQ": (ONNX2TF, "onnx_int8"),
}


def run_paths(dataset: str, student: str, seed: int) -> dict:
    """One seed's distilled student through every int8 path (rpi4's int8 I/O); test top-1 of each and of fp32."""
    import os

    out: dict = {"paths": {}}
    for converter in (ONNX2TF, LITERT):
        if converter == LITERT and not os.environ.get("PIPELINE_LITERT_PYTHON"):
            continue
        raw = config(dataset, student, seed, QAT_VARIANTS["qat_new"], "distill")
        raw["target"] = {"name": "rpi4", "check_before_training": False}
        raw["export"] = {"source": "distill", "teacher_onnx": False, **converter,
                         "formats": ["onnx", "tflite_int8"] if converter == LITERT else
                         ["onnx", "onnx_int8", "tflite_fp32", "tflite_int8", "openvino_fp32", "openvino_int8"]}
        m = run_pipeline(validate_config(raw, source=f"qat_vs_ptq --paths {dataset} {student} s{seed}"), start="export", until="export")
        metrics = m["export"].metrics
        fidelity = metrics["fidelity"]
        out["fp32"] = 100 * m["distill"].metrics["test_acc"]
        for column, (cfg, key) in PATHS.items():
            if cfg == converter and key in fidelity:
                out["paths"][column] = 100 * fidelity[key]["accuracy"]
        if converter == ONNX2TF:
            out["openvino_accuracy_control"] = metrics.get("openvino_accuracy_control")
            out["worst_layer"] = {key: info["worst"] for key, info in (metrics.get("layer_error") or {}).items() if info.get("worst")}
    return out


KEEP_FLOAT_RESULTS = ROOT / "results" / "keep_float.json"
KEPT_PATHS = {"TFLite (onnx2tf)": "tflite_int8", "OpenVINO (NNCF)": "openvino_int8", "ONNX Runtime QDQ": "onnx_int8"}
PROFILED = ("openvino_int8", "onnx_int8")  # per-op sum vs whole-model p50, in seed 0


def p50_ms(path: Path, images: np.ndarray) -> float:
    """Median single-image latency at 1 thread, until p50/p90 are known to ±3 % (the benchmark stage's rule, 2 s cap)."""
    from pipeline.benchmark.latency import StopRule, measure_latency
    from pipeline.runtimes import load

    row = measure_latency(lambda: load(path, 1), images, warmup=20, rule=StopRule(min_runs=200, max_seconds=2.0))
    row.pop("runtime").close()
    return row["latency_ms"]["p50"]


def run_keep_float(dataset: str, student: str, seed: int) -> dict:
    """One seed's distilled student through every int8 path on rpi4 with export.keep_float off (all-int8: OpenVINO's
    accuracy control off too) and auto (accuracy control auto after it): test top-1 ÷ fp32, layers kept, and the p50
    ratio auto ÷ all-int8 (the two files timed alternately, twice each, after both exports; byte-identical files are
    said identical, not timed); the Edge TPU's best integer-only int8 beside it; in seed 0, per-op sums vs p50."""
    import shutil
    import tempfile

    from pipeline.artifacts import sha256_file
    from pipeline.runtimes.op_time import op_times

    out: dict = {"modes": {}}
    with tempfile.TemporaryDirectory(prefix="keep-float-off-") as kept_aside:
        files: dict[str, dict[str, Path]] = {}
        for mode, keep, control in (("off", [], "off"), ("auto", "auto", "auto")):
            raw = config(dataset, student, seed, QAT_VARIANTS["qat_new"], "distill", DECISION_SPLIT.get(dataset))
            raw["target"] = {"name": "rpi4", "check_before_training": False}
            raw["export"] = {"source": "distill", "teacher_onnx": False, "tflite_converter": "onnx2tf", "keep_float": keep,
                             "openvino_accuracy_control": control,
                             "formats": ["onnx", "onnx_int8", "tflite_fp32", "tflite_int8", "openvino_fp32", "openvino_int8"]}
            cfg = validate_config(raw, source=f"qat_vs_ptq --keep-float {dataset} {student} s{seed}")
            metrics = run_pipeline(cfg, start="export", until="export")["export"].metrics
            export = cfg.run_dir / "05_export"
            if mode == "off":  # the next export replaces these files: keep a copy to time beside auto's
                export = Path(shutil.copytree(export, Path(kept_aside) / "off"))
            listed = json.loads((export / "artifacts.json").read_text())
            out["fp32"] = 100 * metrics["fidelity"]["onnx"]["accuracy"]
            out["decision_images"] = len(json.loads((cfg.run_dir / "01_data" / "split.json").read_text())["indices"]["val"])
            row = out["modes"][mode] = {}
            for column, key in KEPT_PATHS.items():
                record = (metrics.get("keep_float") or {}).get(key) or {}
                control_rec = (metrics.get("openvino_accuracy_control") or {}) if key == "openvino_int8" else {}
                kept = len(record.get("kept") or []) + (len(control_rec.get("float_layers") or []) if control_rec.get("used") else 0)
                row[column] = {"top1": 100 * metrics["fidelity"][key]["accuracy"], "kept": kept,
                               "decision": (record.get("decision") or {}).get("ci95_pts"), "reason": record.get("reason")}
                files.setdefault(key, {})[mode] = export / listed[key]
        images = np.load(cfg.run_dir / "01_data" / "calibration.npy")[:64]
        for column, key in KEPT_PATHS.items():
            off, auto = files[key]["off"], files[key]["auto"]
            same = all(sha256_file(a) == sha256_file(b) for a, b in _model_files(off, auto))
            times = {"off": [], "auto": []}
            for mode in ("off", "auto") * (1 if same else 2):
                times[mode].append(p50_ms(files[key][mode], images))
            p50_off = float(np.median(times["off"]))
            out["modes"]["off"][column]["p50_ms"] = p50_off
            out["modes"]["auto"][column].update(identical=same, p50_ms=p50_off if same else float(np.median(times["auto"])))
            if seed == 0 and key in PROFILED:  # the engine's per-op sum, measured right after the whole model's p50
                prof = op_times(off, images[:8], threads=1, runs=50)
                out.setdefault("op_time", {})[key] = {"sum_ms": prof.get("total_ms"), "p50_ms": p50_ms(off, images)}
    raw = config(dataset, student, seed, QAT_VARIANTS["qat_new"], "distill", DECISION_SPLIT.get(dataset))  # Edge TPU: its remedies
    raw["export"] = {"source": "distill", "teacher_onnx": False, "formats": ["onnx", "tflite_int8"]}
    m = run_pipeline(validate_config(raw, source=f"qat_vs_ptq --keep-float {dataset} {student} s{seed} edge_tpu"),
                     start="export", until="export")
    out["edge_tpu"] = {"top1": 100 * m["export"].metrics["fidelity"]["tflite_int8"]["accuracy"],
                       "recalibration": (m["export"].metrics.get("tflite_recalibration") or {}).get("reason")}
    return out


def _checkout() -> str:
    """The commit this process started on, "+changes" when the tree differed from it (rows of one table may come from
    different checkouts; read once, since a commit made while the benchmark runs is not the code it imported)."""
    import subprocess

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "pipeline"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + ("+changes" if dirty else "")


CHECKOUT = _checkout()


def _model_files(a: Path, b: Path) -> list[tuple[Path, Path]]:
    """The files that make each model (an OpenVINO IR is its .xml and .bin), paired."""
    suffixes = (".xml", ".bin") if a.suffix == ".xml" else (a.suffix,)
    return [(a.with_suffix(s), b.with_suffix(s)) for s in suffixes]


def keep_float_table(data: dict) -> str:
    head = ("| data | student | seeds (decision images) | fp32 | "
            + " | ".join(f"{c}: off → auto (÷ fp32), kept, p50 ratio" for c in KEPT_PATHS)
            + " | Edge TPU int8 (integer only, ÷ fp32) | per-op sum ÷ p50 (seed 0) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in data.get("rows", {}).values():
        seeds = list(r["per_seed"].values())
        fp32 = np.array([s["fp32"] for s in seeds])
        cells = [r["dataset"], r["student"], f"{len(seeds)} ({seeds[0].get('decision_images')} val)", f"{fp32.mean():.2f}"]
        for column in KEPT_PATHS:
            off = np.array([100 * s["modes"]["off"][column]["top1"] / s["fp32"] for s in seeds])
            auto = np.array([100 * s["modes"]["auto"][column]["top1"] / s["fp32"] for s in seeds])
            kept = [s["modes"]["auto"][column]["kept"] for s in seeds]
            timed = [s for s in seeds if not s["modes"]["auto"][column].get("identical")]
            ratio = np.array([s["modes"]["auto"][column]["p50_ms"] / s["modes"]["off"][column]["p50_ms"] for s in timed])
            cost = f"×{ratio.mean():.2f}" if len(ratio) else "same file"
            cells.append(f"{off.mean():.1f} % (min {off.min():.1f}) → {auto.mean():.1f} % (min {auto.min():.1f}), "
                         f"kept {'/'.join(map(str, kept))}, {cost}")
        tpu = np.array([100 * s["edge_tpu"]["top1"] / s["fp32"] for s in seeds])
        cells.append(f"{tpu.mean():.1f} % (min {tpu.min():.1f})")
        prof = seeds[0].get("op_time") or {}
        cells.append(", ".join(f"{k}: {v['sum_ms'] / v['p50_ms']:.2f}" for k, v in prof.items() if v.get("sum_ms")) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paths_table(data: dict) -> str:
    head = ("| data | student | seeds | fp32 | " + " | ".join(f"{c} (÷ fp32)" for c in PATHS)
            + " | " + " | ".join(f"worst {k} layer (SQNR)" for k in WORST_OF) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in data.get("rows", {}).values():
        seeds = r["per_seed"].values()
        fp32 = np.array([s["fp32"] for s in seeds])
        cells = [r["dataset"], r["student"], str(len(fp32)), f"{fp32.mean():.2f} ± {fp32.std(ddof=1) if len(fp32) > 1 else 0:.2f}"]
        for column in PATHS:
            v = np.array([s["paths"][column] for s in seeds if column in s["paths"]])
            cells.append("not run" if not len(v) else
                         f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f} ({100 * v.mean() / fp32.mean():.1f} %)")
        for key in WORST_OF:  # over the seeds, the lowest
            found = [s["worst_layer"].get(key) for s in seeds if isinstance(s.get("worst_layer"), dict)]
            worst = min(filter(None, found), key=lambda w: w["sqnr_db"], default=None)
            cells.append(f"{short_name(worst['name'])[:40]} ({worst['op']}, {worst['sqnr_db']:.1f} dB)" if worst else "–")
        used = sum(bool((s.get("openvino_accuracy_control") or {}).get("used")) for s in seeds)
        cells[4 + list(PATHS).index("OpenVINO (NNCF, accuracy control auto)")] += f", control used {used}/{len(fp32)}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise(per_seed: dict[str, dict]) -> dict:
    def stat(get) -> dict:
        v = np.array([get(r) for r in per_seed.values()], dtype=float)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

    s = {"fp32": stat(lambda r: r["fp32"])}
    for k in INT8:
        s[f"ptq_{k}"] = stat(lambda r, k=k: r["ptq"][k])
    for variant in QAT_VARIANTS:
        for k in ("fakequant", *INT8):
            s[f"{variant}_{k}"] = stat(lambda r, v=variant, k=k: r[v][k])
    for k in INT8:  # what export.source: auto ships: the guard's choice between the new QAT weights and PTQ
        s[f"auto_{k}"] = stat(lambda r, k=k: (r["qat_new"] if r["qat_new"]["guard"]["export"] == "qat" else r["ptq"])[k])
    s["guard_picks_qat"] = sum(r["qat_new"]["guard"]["export"] == "qat" for r in per_seed.values())
    return s


def table(data: dict) -> str:
    head = ("| data | student | seeds | fp32 (distilled) | PTQ TFLite | PTQ OpenVINO | old QAT fake-quant | old QAT TFLite "
            "| old QAT OpenVINO | new QAT fake-quant | new QAT TFLite | new QAT OpenVINO | guard keeps QAT "
            "| shipped (auto) TFLite | shipped (auto) OpenVINO |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    fmt = lambda s: f"{s['mean']:.2f} ± {s['std']:.2f}"  # noqa: E731
    for key, r in sorted(data.get("rows", {}).items()):
        s, n = summarise(r["per_seed"]), len(r["per_seed"])  # from the per-seed numbers: columns added later apply too
        cells = [r["dataset"], r["student"], str(n), fmt(s["fp32"]), fmt(s["ptq_tflite_int8"]), fmt(s["ptq_openvino_int8"])]
        cells += [fmt(s[f"{v}_{k}"]) for v in QAT_VARIANTS for k in ("fakequant", *INT8)]
        cells.append(f"{s['guard_picks_qat']}/{n}")
        cells += [fmt(s[f"auto_{k}"]) for k in INT8]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, from: {', '.join(DATASETS)}")
    ap.add_argument("--students", default=",".join(STUDENTS), help=f"comma-separated, from: {', '.join(STUDENTS)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--table", action="store_true", help="print the stored results and exit")
    ap.add_argument("--paths", action="store_true", help="compare the int8 paths (issue 22) instead of PTQ vs QAT")
    ap.add_argument("--keep-float", action="store_true",
                    help="every int8 path with export.keep_float off and auto (issue 29): top-1, layers kept, p50 cost")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.keep_float:
        data = json.loads(KEEP_FLOAT_RESULTS.read_text()) if KEEP_FLOAT_RESULTS.is_file() else {}
        for dataset in [] if args.table else args.datasets.split(","):
            for student in args.students.split(","):
                t0, key = time.perf_counter(), f"{dataset}/{student}"
                row = data.setdefault("rows", {}).setdefault(key, {"dataset": dataset, "student": student, "per_seed": {}})
                for seed in args.seeds:  # each seed written as it finishes
                    row["per_seed"][str(seed)] = run_keep_float(dataset, student, seed)
                    row["per_seed"][str(seed)]["commit"] = CHECKOUT
                    row.update(target="rpi4", measured=time.strftime("%Y-%m-%d"),
                               wall_seconds=round(time.perf_counter() - t0, 1))
                    atomic_write_json(KEEP_FLOAT_RESULTS, data)
                print(keep_float_table(data), flush=True)
        print(keep_float_table(data))
        return 0
    if args.paths:
        data = json.loads(PATHS_RESULTS.read_text()) if PATHS_RESULTS.is_file() else {}
        for dataset in [] if args.table else args.datasets.split(","):
            for student in args.students.split(","):
                t0 = time.perf_counter()
                per_seed = {str(seed): run_paths(dataset, student, seed) for seed in args.seeds}
                data.setdefault("rows", {})[f"{dataset}/{student}"] = {
                    "dataset": dataset, "student": student, "per_seed": per_seed, "target": "rpi4",
                    "wall_seconds": round(time.perf_counter() - t0, 1), "measured": time.strftime("%Y-%m-%d")}
                atomic_write_json(PATHS_RESULTS, data)
                print(paths_table(data), flush=True)
        print(paths_table(data))
        return 0
    if not args.table:
        for dataset in args.datasets.split(","):
            for student in args.students.split(","):
                if dataset not in DATASETS or student not in STUDENTS:
                    ap.error(f"unknown {dataset!r}/{student!r} (datasets: {', '.join(DATASETS)}; students: {', '.join(STUDENTS)})")
                t0 = time.perf_counter()
                per_seed = {str(seed): run_one(dataset, student, seed) for seed in args.seeds}
                data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
                if "rows" not in data:  # results of the earlier layout (one dataset, no old/new split) are replaced
                    data = {}
                data.update(common=COMMON, datasets=DATASETS, qat_variants=QAT_VARIANTS)
                data.setdefault("rows", {})[f"{dataset}/{student}"] = {
                    "dataset": dataset, "student": student, "per_seed": per_seed, "summary": summarise(per_seed),
                    "wall_seconds": round(time.perf_counter() - t0, 1)}
                atomic_write_json(RESULTS, data)
                print(table(data), flush=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
