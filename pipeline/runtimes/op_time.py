"""Per-op time, where the engine itself measures it: what benchmark_app ``-pc`` and benchmark_model
``--enable_op_profiling`` show, from the Python APIs the host benchmark and the board runner already use.

- OpenVINO: ``PERF_COUNT`` on a second compilation of the IR; each request's ``profiling_info`` (real time per
  executed node, after the plugin's fusions, so a node is what actually ran: ``Convolution`` with its fused
  ReLU, a ``Subgraph`` of eltwise ops).
- ONNX Runtime: ``SessionOptions.enable_profiling`` on a second session; the Chrome-trace file's ``Node``
  events (``<node>_kernel_time``, microseconds) of the timed runs, names as the optimised graph has them.
- LiteRT: its Python API exposes no op profiler (only the C++ ``benchmark_model`` does), so TFLite per-op time
  is not measured, with that reason, rather than estimated.

Profiling costs time of its own: ONNX Runtime's span of each node also holds the profiler's work on it (the
input/output type-and-shape strings it records, 1–2 µs a node: ``benchmarks/op_time.py`` measured a 16×16 QDQ
model's sum at 1.99× its p50, a 224 px resnet18's at 0.98×). So these figures say *where* time goes, as shares;
the model's latency is the benchmark's, measured without the profiler. Torch-free (the board runner imports it).
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError, one_line

IMAGES, RUNS = 8, 50  # the first test images, profiled runs: the host benchmark's and a board's profile alike
NOT_MEASURED = {
    "tflite": "LiteRT's Python API has no op profiler (benchmark_model --enable_op_profiling is C++ only)",
    "torch": "per-op time is measured for exported artifacts (OpenVINO, ONNX Runtime) only",
}


def profiled(key: str) -> bool:
    """Whether artifact ``key`` gets a per-op profile where it is timed: the int8 exports, whose int8 error per layer
    the report puts beside it (the format table says which; a compiled model is not one of its rows)."""
    from pipeline.formats import FORMATS

    return key in FORMATS and FORMATS[key].precision == "int8"


def profile(artifact: Path, images: np.ndarray, device: str = "CPU") -> dict[str, Any]:
    """``op_times`` at one thread on the first ``IMAGES`` images, ``RUNS`` runs; a profile that fails is its table's
    reason, never the caller's failure (it is a diagnosis)."""
    try:
        return op_times(artifact, images[:IMAGES], threads=1, runs=RUNS, device=device)
    except Exception as exc:  # noqa: BLE001 - said in its table
        return {"measured": False, "reason": one_line(exc, 300)}


def op_times(artifact: Path, images: np.ndarray, *, threads: int = 0, runs: int = 20, warmup: int = 3,
             device: str = "CPU") -> dict[str, Any]:
    """Median time per inference of each op over ``runs`` single-image inferences after ``warmup`` (the median: one
    preempted call must not move a 10-µs op's figure).

    Returns ``measured`` (bool), ``engine``, ``reason`` (when not measured), ``runs``, ``total_ms`` (the sum over
    ops: the profiled inference's time inside the engine) and ``ops``: ``{node, op_type, ms, share}`` slowest first.
    """
    from pipeline.runtimes import load

    runtime = load(Path(artifact), threads, device=device)
    try:
        if runtime.name not in _PROFILERS:
            return {"measured": False, "engine": runtime.name,
                    "reason": NOT_MEASURED.get(runtime.name, f"{runtime.name} exposes no per-op profiler here")}
        inputs = [runtime.engine_input(images[i % len(images)][None]) for i in range(warmup + runs)]
        try:
            per_node = _PROFILERS[runtime.name](runtime, inputs, warmup)
        except PipelineError:
            raise
        except Exception as exc:  # a profiler the installed engine lacks is said, not a crash of the benchmark
            return {"measured": False, "engine": runtime.name, "reason": f"profiling failed: {one_line(exc)}"}
    finally:
        runtime.close()
    return _table(runtime.name, per_node, runs)


def _table(engine: str, per_node: dict[tuple[str, str], list[float]], runs: int) -> dict[str, Any]:
    """``per_node``: each node's seconds in each timed run (0 in a run it did not execute in)."""
    ms = {node: float(np.median(seconds + [0.0] * (runs - len(seconds)))) * 1e3 for node, seconds in per_node.items()}
    total = sum(ms.values())
    ops = [{"node": node, "op_type": op_type, "ms": t, "share": t / total if total else 0.0} for (node, op_type), t in ms.items()]
    ops.sort(key=lambda r: (-r["ms"], r["node"]))
    return {"measured": True, "engine": engine, "runs": runs, "total_ms": total, "ops": ops}


def _openvino(runtime, inputs: list, warmup: int) -> dict[tuple[str, str], list[float]]:
    """Seconds per executed node in each timed run; the plugin's settings are the runtime's own."""
    from pipeline.runtimes.openvino_core import core

    config = {k: v for k, v in runtime.info.items() if k in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS")}
    compiled = core().compile_model(core().read_model(str(runtime.artifact)), runtime.info.get("device", "CPU"),
                                    {**config, "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for i, batch in enumerate(inputs):
        request.set_input_tensor(0, batch)
        request.infer()
        if i < warmup:
            continue
        this_run: dict[tuple[str, str], float] = defaultdict(float)
        for p in request.profiling_info:  # the last inference's
            if p.status == p.Status.EXECUTED:
                this_run[(p.node_name, p.node_type)] += p.real_time.total_seconds()
        for node, t in this_run.items():
            seconds[node].append(t)
    return seconds


def _onnxruntime(runtime, inputs: list, warmup: int) -> dict[tuple[str, str], list[float]]:
    """Seconds per kernel in each timed run (the trace's ``model_run`` spans after the warm-up)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = runtime.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="op_time_") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(runtime.artifact), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for batch in inputs:
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    timed = runs[warmup:]
    per_run: list[dict[tuple[str, str], float]] = [defaultdict(float) for _ in timed]
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        span = next((i for i, (start, end) in enumerate(timed) if start <= e["ts"] <= end), None)
        if span is not None:
            per_run[span][(e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"))] += e["dur"] * 1e-6
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for this_run in per_run:
        for node, t in this_run.items():
            seconds[node].append(t)
    return seconds


_PROFILERS = {"openvino": _openvino, "onnxruntime": _onnxruntime}
