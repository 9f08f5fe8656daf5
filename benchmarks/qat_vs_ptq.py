"""PTQ vs QAT: the same distilled student exported full-integer int8 with post-training
quantisation only, and after QAT fine-tuning (teacher supervising), on Fashion-MNIST.

For each student and seed, one pipeline run goes data → teacher → distill → qat → export with
``export.source: qat`` (QAT weights, then int8 calibration), then the export stage alone is
re-run with ``export.source: distill`` (the distilled weights straight to int8 calibration:
PTQ). Distill and QAT come from the cache the second time, so both exports start from the same
distilled student; the export stage itself is always re-run, so a changed exporter is measured. Both int8 artifacts (TFLite and OpenVINO/NNCF) are scored on the test split
by the export stage's fidelity check; the fp32 student is the PyTorch model each was made from.

The teacher and the data budget are ``distill_methods.py``'s (resnet56, 16×16, 8k training
images), so the teacher trained there is reused. MobileNetV2 (depthwise convolutions, ReLU6)
is the classic PTQ casualty; resnet8 is the edge_tpu recipe's student.

    python benchmarks/qat_vs_ptq.py                          # both students, seeds 0 1 2
    python benchmarks/qat_vs_ptq.py --students resnet8 --seeds 0
    python benchmarks/qat_vs_ptq.py --table
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
sys.path.insert(0, str(ROOT))

from distill_methods import BUDGET, RUNS, ensure_teacher, locked  # noqa: E402

from pipeline.artifacts import atomic_write_json  # noqa: E402
from pipeline.config import validate_config  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402

RESULTS = ROOT / "results" / "qat_vs_ptq.json"
STUDENTS = {"resnet8": {}, "mobile_half": {}}
INT8 = ("tflite_int8", "openvino_int8")
QAT = {"enabled": True, "epochs": 3, "lr": 0.005, "kd": True}


def run_config(student: str, seed: int, source: str, teacher_checkpoint: str) -> dict:
    raw = json.loads(json.dumps(BUDGET))
    raw.pop("teacher_data")
    raw.update(runs_dir=str(RUNS), name=f"qat-vs-ptq-{student}-s{seed}")
    raw["teacher"] = {"checkpoint": teacher_checkpoint}
    raw["student"] = {"arch": student, "arch_args": STUDENTS[student]}
    raw["distill"] = {**raw["distill"], "method": "kd", "seeds": [seed]}
    raw["qat"] = QAT
    raw["export"] = {"formats": ["onnx", *INT8], "source": source}
    raw["target"] = {"name": "edge_tpu", "check_before_training": False}
    return raw


def run_one(student: str, seed: int, checkpoint: str) -> dict:
    out: dict = {}
    for label, source in (("qat", "qat"), ("ptq", "distill")):
        cfg = validate_config(run_config(student, seed, source, checkpoint), source=f"qat_vs_ptq.py {student} seed {seed}")
        manifests = run_pipeline(cfg, start="export", until="export")  # training cached, the exports always measured anew
        fidelity = manifests["export"].metrics["fidelity"]
        out[label] = {
            "fp32_student": fidelity["onnx"]["reference_accuracy"],  # the PyTorch model the int8 files were made from
            **{k: fidelity[k]["accuracy"] for k in INT8 if k in fidelity},
            **{f"{k}_agreement": fidelity[k]["agreement"] for k in INT8 if k in fidelity},
        }
        if label == "qat":
            q = manifests["qat"].metrics
            out["distill_fp32"] = manifests["distill"].metrics["test_acc"]
            out["fakequant"] = q.get("fakequant_accuracy")
    return out


def summarise(per_seed: dict[str, dict]) -> dict:
    def stat(get):
        v = np.array([100 * get(r) for r in per_seed.values()])
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

    s = {"distill_fp32": stat(lambda r: r["distill_fp32"]), "fakequant": stat(lambda r: r["fakequant"])}
    for label in ("ptq", "qat"):
        s[f"{label}_fp32_student"] = stat(lambda r, lab=label: r[lab]["fp32_student"])
        for k in INT8:
            s[f"{label}_{k}"] = stat(lambda r, lab=label, key=k: r[lab][key])
    return s


def table(data: dict) -> str:
    lines = ["| student | seeds | fp32 (distilled) | PTQ TFLite int8 | QAT TFLite int8 | PTQ OpenVINO int8 | QAT OpenVINO int8 "
             "| QAT fake-quant | QAT fp32 weights |", "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda s: f"{s['mean']:.2f} ± {s['std']:.2f}"  # noqa: E731
    for student, r in data.get("students", {}).items():
        s = r["summary"]
        lines.append(f"| {student} | {len(r['per_seed'])} | {fmt(s['distill_fp32'])} | {fmt(s['ptq_tflite_int8'])} "
                     f"| {fmt(s['qat_tflite_int8'])} | {fmt(s['ptq_openvino_int8'])} | {fmt(s['qat_openvino_int8'])} "
                     f"| {fmt(s['fakequant'])} | {fmt(s['qat_fp32_student'])} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", default=",".join(STUDENTS), help=f"comma-separated, from: {', '.join(STUDENTS)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--table", action="store_true", help="print the stored results and exit")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.table:
        checkpoint, teacher = ensure_teacher("kd")
        for student in args.students.split(","):
            if student not in STUDENTS:
                ap.error(f"unknown student {student!r} (students: {', '.join(STUDENTS)})")
            t0 = time.perf_counter()
            per_seed = {str(seed): run_one(student, seed, checkpoint) for seed in args.seeds}
            with locked(RESULTS.with_suffix(".lock")):
                data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
                data.update(budget=BUDGET, qat=QAT, teacher_top1=100 * teacher["test_acc"])
                data.setdefault("students", {})[student] = {"per_seed": per_seed, "summary": summarise(per_seed),
                                                            "wall_seconds": round(time.perf_counter() - t0, 1)}
                atomic_write_json(RESULTS, data)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
