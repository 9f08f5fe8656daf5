"""Peer check: our OpenVINO latency vs OpenVINO's own ``benchmark_app`` on the same IR, same threads.

    python benchmarks/latency_vs_benchmark_app.py                 # makes its own IRs (fp32 + int8)
    python benchmarks/latency_vs_benchmark_app.py --ir runs/edge_tpu/05_export/openvino_int8/student.xml

For each IR and thread count, batch-1 medians taken in interleaved repeats (the median of the
repeats is reported, so a burst of load from elsewhere hits both tools alike):

* ``benchmark_app``: ``-d CPU -hint none -nstreams 1 -nthreads N -api sync -infer_precision f32
  -ip f32 -niter K``: one synchronous request on one stream; its latency is ``request.latency``,
  timed inside OpenVINO around ``infer()``, inputs (random) filled once. ``-ip f32`` keeps the
  float input our runtime feeds (benchmark_app's default for image inputs is u8 + a convert).
* ``ours``: the pipeline's headline number, ``pipeline.benchmark.latency.measure_latency`` over
  ``pipeline.runtimes.load(xml, threads=N)``: the engine call (``invoke``: ``infer`` on an input
  prepared before the clock starts) on real-shaped images, cycled.
* ``ours_e2e``: the same run's end-to-end number, one whole ``predict`` call (input checks,
  layout, ``infer``, copy of the logits): what the Python wrapper adds on top.

Ratio = ours / benchmark_app; the check passes within ±15 %. Results go to
``benchmarks/results/latency_vs_benchmark_app.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.benchmark.latency import StopRule, measure_latency, resolve_threads  # noqa: E402

TOLERANCE = 0.15
DEFAULT_MODELS = ("resnet8:1x16x16", "resnet20:3x32x32")  # the edge_tpu recipe's student; a CIFAR-size net


def make_irs(models: list[str], folder: Path) -> list[Path]:
    """fp32 and NNCF int8 IRs of untrained zoo models, through the pipeline's own exporters."""
    import torch

    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.export.torch2onnx import torch2onnx
    from pipeline.models import build_model

    irs = []
    for spec in models:
        arch, _, shape = spec.partition(":")
        c, h, w = (int(d) for d in shape.split("x"))
        torch.manual_seed(0)
        model = build_model(arch, 10, c, {}).eval()
        onnx_path = torch2onnx(model, (c, h, w), folder / f"{arch}_{c}x{h}x{w}.onnx")
        calib = np.random.default_rng(0).standard_normal((32, c, h, w)).astype(np.float32)
        paths = onnx2openvino(onnx_path, folder / onnx_path.stem, calib)
        irs += [paths["openvino_fp32"], paths["openvino_int8"]]
    return irs


def ir_input_shape(xml: Path) -> tuple[int, ...]:
    from pipeline.runtimes.openvino_core import core

    return tuple(int(d) for d in core().read_model(str(xml)).inputs[0].get_shape())


def ours(xml: Path, images: np.ndarray, threads: int, niter: int) -> dict:
    """The pipeline's measurement, as the benchmark stage takes it."""
    from pipeline.runtimes import load

    rule = StopRule(min_runs=niter, precision_pct=None)  # exactly niter calls, as benchmark_app -niter
    res = measure_latency(lambda: load(xml, threads=threads), images, warmup=10, rule=rule)
    runtime = res.pop("runtime")
    config = {k: str(runtime.compiled.get_property(k)) for k in
              ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "ENABLE_CPU_PINNING")}
    runtime.close()
    return {**res["latency_ms"], "e2e_p50": res["e2e_latency_ms"]["p50"], "e2e_min": res["e2e_latency_ms"]["min"],
            "init_ms": res["init_ms"], "first_ms": res["first_ms"], "runs": res["runs"], "timed": res["timed"], "config": config}


_LINE = re.compile(r"(Median|Average|Min|Max):\s+([\d.]+)\s*(ms|us)")


def benchmark_app(xml: Path, threads: int, niter: int) -> dict:
    cmd = ["benchmark_app", "-m", str(xml), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads", str(threads),
           "-api", "sync", "-infer_precision", "f32", "-ip", "f32", "-niter", str(niter)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark_app failed ({proc.returncode}): {proc.stdout[-800:]}{proc.stderr[-800:]}")
    out = {"cmd": " ".join(cmd)}
    for name, value, unit in _LINE.findall(proc.stdout):
        out[{"Median": "p50", "Average": "mean", "Min": "min", "Max": "max"}[name]] = float(value) / (1000 if unit == "us" else 1)
    first = re.search(r"First inference took ([\d.]+) ms", proc.stdout)
    compiled = re.search(r"Compile model took ([\d.]+) ms", proc.stdout)
    pinning = re.search(r"ENABLE_CPU_PINNING: (\w+)", proc.stdout)
    out.update({"first_ms": float(first.group(1)) if first else None, "compile_ms": float(compiled.group(1)) if compiled else None,
                "ENABLE_CPU_PINNING": pinning.group(1) if pinning else None})
    if "p50" not in out:
        raise RuntimeError(f"benchmark_app printed no latency: {proc.stdout[-800:]}")
    return out


def compare_one(xml: Path, threads: int, niter: int, repeats: int) -> dict:
    shape = ir_input_shape(xml)
    images = np.random.default_rng(1).standard_normal((64, *shape[1:])).astype(np.float32)
    n = resolve_threads(threads)
    runs = {"ours": [], "benchmark_app": []}
    for _ in range(repeats):  # interleaved: background load hits both alike
        runs["ours"].append(ours(xml, images, n, niter))
        runs["benchmark_app"].append(benchmark_app(xml, n, niter))
    med = {k: float(np.median([r["p50"] for r in v])) for k, v in runs.items()}
    med["ours_e2e"] = float(np.median([r["e2e_p50"] for r in runs["ours"]]))
    best = {k: float(np.min([r["min"] for r in v])) for k, v in runs.items()}  # least disturbed by other load
    ratio = med["ours"] / med["benchmark_app"]
    return {
        "ir": str(xml),
        "precision": "int8" if "int8" in str(xml) else "fp32",
        "input_shape": list(shape),
        "threads": threads,
        "threads_used": n,
        "niter": niter,
        "repeats": repeats,
        "p50_ms": med,
        "min_ms": best,
        "ratio_ours_vs_benchmark_app": ratio,
        "ratio_min_ours_vs_benchmark_app": best["ours"] / best["benchmark_app"],
        "ratio_e2e_vs_benchmark_app": med["ours_e2e"] / med["benchmark_app"],
        "wrapper_overhead_ms": med["ours_e2e"] - med["ours"],
        "within_tolerance": abs(ratio - 1) <= TOLERANCE,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ir", type=Path, nargs="+", help="OpenVINO .xml files (default: make fp32 and int8 IRs of --models)")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="arch:CxHxW of zoo models to export when no --ir")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = all cores")
    p.add_argument("--niter", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "latency_vs_benchmark_app.json")
    args = p.parse_args(argv)

    import openvino as ov
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="ov-peer-") as tmp:
        irs = args.ir or make_irs(args.models, Path(tmp))
        results = [compare_one(Path(xml), t, args.niter, args.repeats) for xml in irs for t in args.threads]

    table = Table(title_justify="left", title=f"OpenVINO batch-1 p50 latency (ms), ours vs benchmark_app (median of {args.repeats} interleaved repeats)")
    for col in ("IR", "threads", "benchmark_app", "ours", "ours / bapp", "min: ours / bapp", "within ±15 %",
                "ours end-to-end", "e2e / bapp"):
        table.add_column(col)
    for r in results:
        m = r["p50_ms"]
        table.add_row(Path(r["ir"]).parent.parent.name + "/" + Path(r["ir"]).parent.name, str(r["threads_used"]),
                      f"{m['benchmark_app']:.4f}", f"{m['ours']:.4f}", f"{r['ratio_ours_vs_benchmark_app']:.3f}",
                      f"{r['ratio_min_ours_vs_benchmark_app']:.3f}", "yes" if r["within_tolerance"] else "NO",
                      f"{m['ours_e2e']:.4f}", f"{r['ratio_e2e_vs_benchmark_app']:.3f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)

    from pipeline.machine import describe_device

    payload = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": describe_device(),
        "python": platform.python_version(),
        "openvino": ov.get_version(),
        "tolerance": TOLERANCE,
        "method": __doc__,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {args.output}")
    return 0 if all(r["within_tolerance"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
