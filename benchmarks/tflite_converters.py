"""Two ways to a full-integer int8 TFLite: onnx2tf (PyTorch → ONNX → TF → TFLite) vs litert-torch (PyTorch → LiteRT).

For each zoo student, one model is trained on Fashion-MNIST at 16×16 (the data stage's own split,
preprocessing and calibration subset), then converted both ways from the same checkpoint and
calibration images (per-channel int8 weights, int8 I/O, NHWC). Each int8 file is scored on the
test split by LiteRT (top-1, top-1 agreement with the fp32 PyTorch model), read back for its op
count and full-integer problems, judged by the Edge TPU op check, and timed by the benchmark
stage's own batch-1 latency method (1 thread, ``invoke`` alone). Dead channels are zeroed first,
as the export stage does (``pipeline/export/dead_channels.py``).

litert-torch runs in its own venv (``PIPELINE_LITERT_PYTHON``, docker/requirements-litert.txt).

    PIPELINE_LITERT_PYTHON=/opt/litert-venv/bin/python python benchmarks/tflite_converters.py
    python benchmarks/tflite_converters.py --table          # print the stored results
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

RESULTS = ROOT / "results" / "tflite_converters.json"
WORK = ROOT / "runs" / "tflite_converters"
STUDENTS = ("resnet8", "mobile_half")
DATA = {"dataset": "fashion_mnist", "image_size": 16, "max_train": 8000, "max_test": 2000, "calibration_size": 256}
TRAIN = {"epochs": 6, "lr": 0.05, "batch": 64, "seed": 0}
CONVERTERS = ("onnx2tf", "litert_torch")


def data_split(out: Path) -> Path:
    """The pipeline's data stage (split, preprocessing, calibration subset) into ``out``."""
    import pipeline.data.stage as data_stage
    from pipeline.config import validate_config
    from pipeline.run import StageContext

    if not (out / "calibration.npy").is_file():
        out.mkdir(parents=True, exist_ok=True)
        cfg = validate_config({"name": "tflite-converters", "runs_dir": str(WORK), "data": DATA})
        data_stage.run(StageContext(cfg=cfg, out=out, inputs={}, cache=WORK / "cache"))
    return out


def train(arch: str, x: np.ndarray, y: np.ndarray, out: Path):
    """Plain cross-entropy SGD (cosine), no teacher: the comparison is about conversion, not distillation."""
    import torch
    import torch.nn.functional as F

    from pipeline.models import build_model

    torch.manual_seed(TRAIN["seed"])
    model = build_model(arch, 10, x.shape[1])
    steps = TRAIN["epochs"] * ((len(x) + TRAIN["batch"] - 1) // TRAIN["batch"])
    opt = torch.optim.SGD(model.parameters(), lr=TRAIN["lr"], momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(TRAIN["epochs"]):
        model.train()
        for idx in torch.randperm(len(x)).split(TRAIN["batch"]):
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def score(path: Path, x: np.ndarray, y: np.ndarray, reference: np.ndarray, calib_sha: str) -> dict:
    from pipeline.benchmark.latency import measure_latency
    from pipeline.formats.tflite_graph import full_integer_problems, read_tflite
    from pipeline.runtimes.tflite_rt import TFLiteRuntime
    from pipeline.target.edge_tpu_check import check_edgetpu, summary_line

    with TFLiteRuntime(path, threads=1) as rt:
        pred = rt.predict(x).argmax(1)
    graph = read_tflite(path)
    lat = measure_latency(lambda: TFLiteRuntime(path, threads=1), x[:200])
    lat.pop("runtime").close()
    tpu = check_edgetpu(path)
    return {"top1": 100 * float((pred == y).mean()), "agreement": 100 * float((pred == reference).mean()),
            "ops": len(graph.ops), "op_counts": graph.op_counts(), "full_integer_problems": full_integer_problems(graph, "int8"),
            "input": {"shape": list(graph.inputs[0].shape), "dtype": graph.inputs[0].dtype},
            "bytes": path.stat().st_size, "latency_ms_p50": lat["latency_ms"]["p50"], "e2e_ms_p50": lat["e2e_latency_ms"]["p50"],
            "edgetpu": {"verdict": tpu["verdict"], "summary": summary_line(tpu)}, "calibration_sha256": calib_sha}


def run_one(arch: str, data: Path) -> dict:
    import torch

    from pipeline.artifacts import sha256_file
    from pipeline.data import load_split
    from pipeline.export.dead_channels import neutralize_dead_channels
    from pipeline.export.onnx2tflite import onnx2tflite
    from pipeline.export.torch2litert import tool_versions, torch2litert
    from pipeline.export.torch2onnx import torch2onnx
    from pipeline.models.checkpoint import save_checkpoint

    out = WORK / arch
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr = load_split(data, "train")
    xte, yte = load_split(data, "test")
    calib = np.load(data / "calibration.npy", allow_pickle=False)
    t0 = time.perf_counter()
    model = train(arch, xtr, ytr, out)
    # as the export stage does before any conversion: dead channels (BN var ≈ 0) zeroed, so neither converter's
    # int8 scales are inflated by them; both converters then read this one checkpoint
    dead = neutralize_dead_channels(model)
    save_checkpoint(out / "student.pt", model, {"arch": arch, "arch_args": {}, "num_classes": 10, "in_channels": xtr.shape[1]})
    with torch.no_grad():
        reference = torch.cat([model(torch.from_numpy(xte[i : i + 500])) for i in range(0, len(xte), 500)]).argmax(1).numpy()
    row = {"student": arch, "train_seconds": round(time.perf_counter() - t0, 1), "fp32_top1": 100 * float((reference == yte).mean()),
           "dead_channels_zeroed": sum(dead.values())}
    timings = {}
    t0 = time.perf_counter()
    onnx = torch2onnx(model, tuple(xte.shape[1:]), out / "student.onnx", check_inputs=xte[:8])
    paths = {"onnx2tf": onnx2tflite(onnx, out, calib, "int8", True, strict=False)["tflite_int8"]}
    timings["onnx2tf"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    paths["litert_torch"] = torch2litert(out / "student.pt", out / "student_litert_int8.tflite", calib, strict=False)
    timings["litert_torch"] = round(time.perf_counter() - t0, 1)
    calib_sha = sha256_file(data / "calibration.npy")
    for name in CONVERTERS:
        row[name] = {**score(paths[name], xte, yte, reference, calib_sha), "convert_seconds": timings[name]}
    row["litert_torch"]["versions"] = tool_versions(paths["litert_torch"])
    return row


def table(data: dict) -> str:
    head = ("| student | fp32 top-1 | converter | int8 top-1 | agreement with fp32 | ops | op types | size (KiB) "
            "| latency p50 (ms, 1 thread) | convert (s) | full-integer | Edge TPU op check |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for arch, r in data.get("rows", {}).items():
        for name in CONVERTERS:
            c = r[name]
            kinds = ", ".join(f"{k}×{v}" for k, v in sorted(c["op_counts"].items()))
            lines.append(f"| {arch} | {r['fp32_top1']:.2f} | {name} | {c['top1']:.2f} | {c['agreement']:.2f} | {c['ops']} "
                         f"| {kinds} | {c['bytes'] / 1024:.0f} | {c['latency_ms_p50']:.3f} | {c['convert_seconds']:.0f} "
                         f"| {'yes' if not c['full_integer_problems'] else '; '.join(c['full_integer_problems'][:2])} "
                         f"| {c['edgetpu']['verdict']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", default=",".join(STUDENTS), help=f"comma-separated, from: {', '.join(STUDENTS)}")
    ap.add_argument("--table", action="store_true", help="print the stored results and exit")
    args = ap.parse_args()
    if not args.table:
        import torch

        torch.set_num_threads(1)
        data = data_split(WORK / "01_data")
        for arch in args.students.split(","):
            if arch not in STUDENTS:
                ap.error(f"unknown student {arch!r} (from: {', '.join(STUDENTS)})")
            row = run_one(arch, data)
            stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
            stored.update(data=DATA, train=TRAIN)
            stored.setdefault("rows", {})[arch] = row
            atomic_write_json(RESULTS, stored)
            print(table(stored), flush=True)
    print(table(json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
