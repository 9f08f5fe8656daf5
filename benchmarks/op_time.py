"""Per-op time vs whole-model latency: does the engine's per-op profile add up to what the benchmark measures?

    python benchmarks/op_time.py                       # the default models, both engines
    python benchmarks/op_time.py --models resnet8 --runs 3

For each model (random weights: latency does not depend on their values), the ONNX export is quantised to int8 twice,
as the export stage does: ONNX Runtime QDQ (``onnx2qdq``) and OpenVINO NNCF (``onnx2openvino``). Then, for each int8
artifact and alternately ``--runs`` times (the medians are reported, so load from elsewhere hits both alike), at one
thread:

* ``p50``: the benchmark stage's number, ``measure_latency`` over ``pipeline.runtimes.load`` without a profiler;
* ``sum``: the sum over ops of ``pipeline.runtimes.op_time.op_times`` (each op's median over 50 profiled runs), what
  the report's "Where accuracy and time go" table's ms column adds up to.

``sum ÷ p50`` within 15 % is issue 29's goal. A profiler costs time per node (ONNX Runtime's builds each node's
input/output type-and-shape strings inside the node's timed span), so the ratio also says how far the ms column of a
model with many microsecond nodes can be read as time rather than as shares. Rows go to ``results/op_time.json``
as they finish; the per-op table of the largest model is printed for each engine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]  # the pipeline, and the sibling benchmark whose p50 this shares

from pipeline.artifacts import atomic_write_json  # noqa: E402
from qat_vs_ptq import p50_ms  # noqa: E402  (the benchmark stage's one-thread median, as the keep_float rows take it)

RESULTS = ROOT / "results" / "op_time.json"
MODELS = {  # arch -> input C×H×W: the project's students at their datasets' sizes, then an ImageNet-sized timm model
    "mobile_half": (1, 16, 16),
    "resnet8": (3, 32, 32),
    "timm:resnet18": (3, 224, 224),
}
ENGINES = {"onnx_int8": "ONNX Runtime QDQ", "openvino_int8": "OpenVINO (NNCF)"}
PROFILED_RUNS = 50


def make_int8(arch: str, shape: tuple[int, int, int], folder: Path) -> dict[str, Path]:
    """The model's two int8 artifacts, calibrated on 32 seeded random images."""
    import torch

    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.export.onnx2qdq import onnx2qdq
    from pipeline.export.torch2onnx import torch2onnx
    from pipeline.models import build_model

    torch.manual_seed(0)
    model = build_model(arch, 10, shape[0], {}).eval()
    stem = arch.replace(":", "_")
    onnx_path = torch2onnx(model, shape, folder / f"{stem}.onnx")
    calibration = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    ir = onnx2openvino(onnx_path, folder / stem, calibration, fp32=False)["openvino_int8"]
    return {"onnx_int8": onnx2qdq(onnx_path, folder / f"{stem}_int8.onnx", calibration), "openvino_int8": ir}


def measure(path: Path, images: np.ndarray, runs: int) -> dict:
    from pipeline.runtimes.op_time import op_times

    p50s, sums, profile = [], [], None
    for _ in range(runs):  # alternated: a burst of load hits both numbers alike
        p50s.append(p50_ms(path, images))
        profile = op_times(path, images[:8], threads=1, runs=PROFILED_RUNS)
        if not profile.get("measured"):
            return {"measured": False, "reason": profile.get("reason")}
        sums.append(profile["total_ms"])
    p50, total = float(np.median(p50s)), float(np.median(sums))
    node_ms = [op["ms"] for op in profile["ops"]]
    return {"measured": True, "p50_ms": p50, "sum_ms": total, "ratio": total / p50, "nodes": len(node_ms),
            "median_node_us": 1e3 * float(np.median(node_ms)), "p50_each": p50s, "sum_each": sums,
            "top": profile["ops"][:10]}


def table(data: dict) -> str:
    lines = ["| model | input | engine | nodes profiled | median node (µs) | per-op sum (ms) | p50 (ms) | sum ÷ p50 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for arch, row in data.get("rows", {}).items():
        for key, name in ENGINES.items():
            m = row["engines"].get(key)
            if not m:
                continue
            if not m["measured"]:
                lines.append(f"| {arch} | {row['input']} | {name} | NOT MEASURED: {m['reason']} | | | | |")
                continue
            lines.append(f"| {arch} | {row['input']} | {name} | {m['nodes']} | {m['median_node_us']:.1f} | "
                         f"{m['sum_ms']:.3f} | {m['p50_ms']:.3f} | {m['ratio']:.2f} |")
    return "\n".join(lines)


def top_table(row: dict, key: str) -> str:
    m = row["engines"][key]
    lines = [f"{ENGINES[key]}, {row['arch']} — the 10 slowest ops (sum {m['sum_ms']:.3f} ms, p50 {m['p50_ms']:.3f} ms)",
             "| node | op | ms | share |", "|---|---|---:|---:|"]
    lines += [f"| {op['node']} | {op['op_type']} | {op['ms']:.4f} | {100 * op['share']:.1f} % |" for op in m["top"]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    ap.add_argument("--runs", type=int, default=3, help="alternated p50/profile pairs per artifact (medians reported)")
    ap.add_argument("--table", action="store_true", help="print the stored results and exit")
    args = ap.parse_args()
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for arch in [] if args.table else args.models.split(","):
        if arch not in MODELS:
            ap.error(f"unknown model {arch!r} (from: {', '.join(MODELS)})")
        shape = MODELS[arch]
        images = np.random.default_rng(1).standard_normal((64, *shape)).astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="op-time-") as folder:
            artifacts = make_int8(arch, shape, Path(folder))
            row = {"arch": arch, "input": "×".join(map(str, shape)), "threads": 1, "machine": platform.processor() or
                   platform.machine(), "measured": time.strftime("%Y-%m-%d"), "engines": {}}
            for key in ENGINES:
                row["engines"][key] = measure(artifacts[key], images, args.runs)
                data.setdefault("rows", {})[arch] = row
                atomic_write_json(RESULTS, data)  # each artifact's row as it finishes
        print(table(data), flush=True)
    print(table(data))
    rows = data.get("rows", {})
    largest = [a for a in MODELS if a in rows][-1:] if rows else []
    for arch in largest:
        for key in ENGINES:
            if rows[arch]["engines"].get(key, {}).get("measured"):
                print()
                print(top_table(rows[arch], key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
