"""Batch-1 latency, measured the same way on the host and on a board: numpy and the standard library only.

The on-device runner (``pipeline.device.runner``) imports this module on boards without torch,
so its rows and the host's come from one method (psutil is used when present, else ``/proc``).

What is timed, in order, for one artifact at one thread count:

1. **init** (``init_ms``): ``factory()`` — read the file and build the runtime (ONNX Runtime
   session, LiteRT interpreter + XNNPACK delegate + ``allocate_tensors``, OpenVINO
   ``compile_model``, ``torch.load`` + model build). The runtime's Python library is already
   imported: the host stage scores accuracy with the same runtime first, so import cost is
   never charged to a model.
2. **first inference** (``first_ms``): the first ``predict`` on the fresh runtime, alone (lazy
   allocation, weight packing, JIT: what a cold-started application pays once).
3. **warm-up**: ``warmup`` further calls, not timed.
4. **measured runs**, in two phases with the same rule: calls until *both* ``min_runs`` calls and
   ``min_seconds`` have passed (TFLite's ``benchmark_model`` rule: ``--num_runs=50 --min_secs=1``),
   each call timed alone by ``time.perf_counter``, back to back. The inputs are real preprocessed
   test images (float32 1×C×H×W), cycled in order, never random data.

   * **engine** (``latency_ms``, the headline p50/p90 and what the gates read): the runtime's
     ``invoke`` alone on an input already in the model's layout and dtype (NHWC, int8/uint8
     quantised), prepared for every image before the clock starts — what ``benchmark_model``
     (``Invoke()``) and OpenVINO's ``benchmark_app`` (``infer()``) time, so the numbers compare;
   * **end to end** (``e2e_latency_ms``): whole ``predict`` calls, i.e. everything a deployed
     application pays per image after preprocessing: the layout change (NCHW→NHWC), int8
     quantise/dequantise of input and output, the inference, and the copy of the logits out.
     The difference is the Python wrapper's cost, which dominates for sub-0.1 ms models.

   The phases are not interleaved: work between two engine calls lets a runtime's worker threads
   fall asleep, which measured 30 % slower on an OpenVINO int8 resnet20. Outside both: image
   decoding and normalisation, argmax, the loop itself. Python's garbage collector is off while
   timing. A runtime without ``invoke`` (a test double) is timed by ``predict`` alone, and then
   both statistics are the same samples.
5. **memory** (``rss_delta_mb``): peak resident set size from just before init until after the
   last run, minus the RSS just before init (Linux: the kernel's high-water mark, reset through
   ``/proc/self/clear_refs``; elsewhere the larger of two samples). It covers the model's weights,
   arena and buffers; it is a lower bound when an earlier model in the same process left freed
   memory the allocator reuses.

Statistics over the measured samples: mean, std (ddof=1), min, max, and p50/p90/p99 by linear
interpolation between closest ranks (numpy's default, Hyndman–Fan type 7).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Callable

import numpy as np

from pipeline.runtimes.base import all_cores  # numpy-only, like this module

PERCENTILES = (50, 90, 99)


def summarise(samples_ms) -> dict[str, float]:
    """mean, std, min, max, p50, p90, p99 (milliseconds) of latency samples."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(a, PERCENTILES)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
    }


def resolve_threads(threads: int) -> int:
    """0 means every core this process may run on."""
    return threads if threads > 0 else all_cores()


def batch_of_one(images: np.ndarray) -> list[np.ndarray]:
    """N×C×H×W → N contiguous 1×C×H×W arrays, sliced before any timing starts."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(f"expected N×C×H×W images with N ≥ 1, got shape {images.shape}")
    return [np.ascontiguousarray(images[i : i + 1]) for i in range(len(images))]


def measure_latency(
    factory: Callable[[], Any],
    images: np.ndarray,
    *,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 1.0,
    keep_samples: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Time ``factory()``, then ``runtime.invoke`` and ``runtime.predict`` on single images, by the method above.

    ``images``: float32 N×C×H×W, preprocessed; each call gets one (1×C×H×W), cycled in order.
    Returns ``init_ms``, ``first_ms``, ``warmup``, ``runs``, ``measured_s``, ``latency_ms`` and
    ``e2e_latency_ms`` (``summarise``), ``timed``, ``rss_before_mb``, ``rss_delta_mb``, ``samples_ms`` when ``keep_samples``,
    and ``runtime``: the runtime it built, for the caller to reuse or close — pop it before
    writing the dict as JSON.
    """
    if min_runs < 1:
        raise ValueError("min_runs must be at least 1")
    inputs = batch_of_one(images)
    n = len(inputs)
    rss_before = rss_bytes()
    exact_peak = reset_peak_rss()

    t0 = clock()
    runtime = factory()
    init_s = clock() - t0
    rss_after_init = rss_bytes()

    t0 = clock()
    runtime.predict(inputs[0])
    first_s = clock() - t0
    for i in range(warmup):
        runtime.predict(inputs[(i + 1) % n])

    engine = hasattr(runtime, "invoke") and hasattr(runtime, "engine_input")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if engine:  # the engine phase first, calls back to back as benchmark_model and benchmark_app make them
            prepared = [runtime.engine_input(x) for x in inputs]
            samples, measured_s = _timed_loop(runtime.invoke, prepared, min_runs, min_seconds, clock)
        e2e, e2e_s = _timed_loop(runtime.predict, inputs, min_runs, min_seconds, clock)
    finally:
        if gc_was_enabled:
            gc.enable()
    if not engine:
        samples, measured_s = e2e, e2e_s

    peak = peak_rss_bytes() if exact_peak else None
    if peak is None:
        peak = max(rss_after_init, rss_bytes())
    samples_ms = np.asarray(samples) * 1e3
    out: dict[str, Any] = {
        "init_ms": init_s * 1e3,
        "first_ms": first_s * 1e3,
        "warmup": warmup,
        "runs": len(samples),
        "measured_s": measured_s,
        "latency_ms": summarise(samples_ms),
        "e2e_latency_ms": summarise(np.asarray(e2e) * 1e3),
        "timed": "invoke" if engine else "predict",
        "rss_before_mb": rss_before / 2**20,
        "rss_delta_mb": max(0, peak - rss_before) / 2**20,
        "memory_method": "peak (VmHWM)" if exact_peak else "sampled RSS",
    }
    if keep_samples:
        out["samples_ms"] = samples_ms
    out["runtime"] = runtime
    return out


def _timed_loop(call: Callable[[Any], Any], inputs: list, min_runs: int, min_seconds: float,
                clock: Callable[[], float]) -> tuple[list[float], float]:
    """Calls on ``inputs`` cycled in order until both ``min_runs`` calls and ``min_seconds`` have passed;
    each call timed alone. Back to back: nothing runs between two calls but the loop and the clock,
    so the runtime's worker threads stay as warm as in a serving loop."""
    samples: list[float] = []
    n = len(inputs)
    start = clock()
    i = 0
    while i < min_runs or clock() - start < min_seconds:
        x = inputs[i % n]
        t0 = clock()
        call(x)
        samples.append(clock() - t0)
        i += 1
    return samples, clock() - start


# --- resident memory, best effort on any Linux or macOS board -----------------------------------


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # peak, not current: a fallback


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux ≥ 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return peak_rss_bytes() is not None
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """VmHWM of /proc/self/status: the peak RSS since the last reset."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
