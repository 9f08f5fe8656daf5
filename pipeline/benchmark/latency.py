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
4. **measured runs**, in two phases with the same stopping rule (``StopRule``), each call timed alone
   by ``time.perf_counter``, back to back. The inputs are real preprocessed test images (float32
   1×C×H×W), cycled in order, never random data. A phase stops once it has ``min_runs`` calls and
   ``min_seconds``, and then, with ``precision_pct`` set, as soon as both its p50 and its p90 are
   known to ±``precision_pct`` % at 95 % confidence (``quantile_interval``), or when ``max_seconds``
   have passed (the cap, so it always ends; ``reached`` says which). With ``precision_pct`` None it
   stops as soon as it has ``min_runs`` calls and ``min_seconds`` (TFLite's ``benchmark_model`` rule:
   ``--num_runs=50 --min_secs=1``, this module's rule before the precision rule).

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
interpolation between closest ranks (numpy's default, Hyndman–Fan type 7). The precision of p50 and
p90 (``precision_record``) is a distribution-free interval from order statistics: the number of
samples below the true q-quantile is Binomial(n, q), so the samples of ranks
⌊nq − z·√(nq(1−q))⌋ and ⌈nq + z·√(nq(1−q))⌉ + 1 (z = 1.96, the normal approximation with the
continuity slack on the safe side) bracket it with ≈ 95 % probability whatever the latency
distribution (Conover, *Practical Nonparametric Statistics*, 3rd ed., §3.2). Its relative
half-width is the larger of the two sides over the estimate. p90 needs about 60 runs before its
upper rank exists; until then its interval is open and the target is not reached.
"""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from pipeline.runtimes.base import all_cores  # numpy-only, like this module

PERCENTILES = (50, 90, 99)
CONFIDENCE = 0.95
_Z = 1.959963984540054  # the two-sided 95 % quantile of the standard normal
PRECISION_QUANTILES = (("p50", 0.5), ("p90", 0.9))  # the statistics the precision rule waits for
StoppedBy = Literal["precision", "max_seconds", "fixed"]


@dataclass(frozen=True)
class StopRule:
    """When a timed phase ends (the module docstring, step 4); ``benchmark.*`` of the config, or a bundle's settings.

    ``precision_pct`` None: the fixed rule (``min_runs`` calls and ``min_seconds``, then stop). Otherwise the
    phase also waits until p50 and p90 are known to ±``precision_pct`` %, but never past ``max_seconds``
    (or ``min_seconds``, if larger)."""

    min_runs: int = 25
    min_seconds: float = 0.0
    precision_pct: float | None = 3.0
    max_seconds: float = 0.5

    def __post_init__(self):
        if self.min_runs < 1:
            raise ValueError("min_runs must be at least 1")
        if self.min_seconds < 0 or not math.isfinite(self.min_seconds):
            raise ValueError(f"min_seconds must be finite and ≥ 0, got {self.min_seconds}")
        if not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise ValueError(f"max_seconds must be finite and > 0, got {self.max_seconds}")
        if self.precision_pct is not None and not self.precision_pct > 0:
            raise ValueError(f"precision_pct must be > 0 (or None for the fixed rule), got {self.precision_pct}")

    @classmethod
    def from_settings(cls, s: dict[str, Any]) -> StopRule:
        """The rule a results file or bundle recorded (its ``settings``); one written before the precision rule has
        no ``precision_pct`` and gets the fixed rule it was measured with."""
        return cls(min_runs=int(s["min_runs"]), min_seconds=float(s["min_seconds"]),
                   precision_pct=None if s.get("precision_pct") is None else float(s["precision_pct"]),
                   max_seconds=float(s.get("max_seconds") or cls.max_seconds))

    def settings(self) -> dict[str, Any]:
        """The rule as a results file's ``settings`` records it (``from_settings`` reads it back)."""
        return {"min_runs": self.min_runs, "min_seconds": self.min_seconds, "precision_pct": self.precision_pct,
                "max_seconds": self.max_seconds, "confidence": CONFIDENCE}


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


def quantile_interval(sorted_ms: np.ndarray, q: float) -> tuple[float | None, float | None]:
    """≈95 % distribution-free interval of the ``q``-quantile from sorted samples (module docstring); a side is None
    when its order statistic does not exist yet (too few samples)."""
    n = len(sorted_ms)
    half = _Z * math.sqrt(n * q * (1 - q))
    lo = math.floor(n * q - half) - 1  # 0-based index of the sample of rank ⌊nq − z·sd⌋
    hi = math.ceil(n * q + half)  # 0-based index of the sample of rank ⌈nq + z·sd⌉ + 1
    return (float(sorted_ms[lo]) if lo >= 0 else None, float(sorted_ms[hi]) if hi < n else None)


def precision_record(samples_ms, target_pct: float | None = None, stopped_by: StoppedBy | None = None) -> dict[str, Any]:
    """p50 and p90 with their 95 % intervals (ms), each one's relative half-width (%, the larger side over the
    estimate), ``half_width_pct`` (the larger of the two), and whether it is within ``target_pct``."""
    a = np.sort(np.asarray(samples_ms, dtype=np.float64))
    out: dict[str, Any] = {"confidence": CONFIDENCE, "target_pct": target_pct}
    widths = []
    for name, q in PRECISION_QUANTILES:
        lo, hi = quantile_interval(a, q)
        est = _type7(a, q)
        width = None if lo is None or hi is None or est <= 0 else 100 * max(est - lo, hi - est) / est
        out.update({f"{name}_low": lo, f"{name}_high": hi, f"{name}_half_width_pct": width})
        widths.append(width)
    out["half_width_pct"] = None if None in widths else max(widths)
    out["reached"] = None if target_pct is None else out["half_width_pct"] is not None and out["half_width_pct"] <= target_pct
    if stopped_by is not None:
        out["stopped_by"] = stopped_by
    return out


def _type7(sorted_a: np.ndarray, q: float) -> float:
    """numpy's default percentile (linear between closest ranks) of already sorted samples, without sorting again."""
    pos = q * (len(sorted_a) - 1)
    i = int(pos)
    j = min(i + 1, len(sorted_a) - 1)
    return float(sorted_a[i] + (sorted_a[j] - sorted_a[i]) * (pos - i))


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
    rule: StopRule = StopRule(),
    keep_samples: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Time ``factory()``, then ``runtime.invoke`` and ``runtime.predict`` on single images, by the method above.

    ``images``: float32 N×C×H×W, preprocessed; each call gets one (1×C×H×W), cycled in order.
    ``rule``: when each timed phase stops. Returns ``init_ms``, ``first_ms``, ``warmup``, ``runs``,
    ``measured_s``, ``latency_ms`` and ``e2e_latency_ms`` (``summarise``), ``latency_precision`` and
    ``e2e_latency_precision`` (``precision_record``, with ``stopped_by``), ``timed``, ``rss_before_mb``,
    ``rss_delta_mb``, ``samples_ms`` when ``keep_samples``, and ``runtime``: the runtime it built,
    for the caller to reuse or close — pop it before writing the dict as JSON.
    """
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
            samples, measured_s, stopped = _timed_loop(runtime.invoke, prepared, rule, clock)
        e2e, e2e_s, e2e_stopped = _timed_loop(runtime.predict, inputs, rule, clock)
    finally:
        if gc_was_enabled:
            gc.enable()
    if not engine:
        samples, measured_s, stopped = e2e, e2e_s, e2e_stopped

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
        "latency_precision": precision_record(samples_ms, rule.precision_pct, stopped),
        "e2e_latency_precision": precision_record(np.asarray(e2e) * 1e3, rule.precision_pct, e2e_stopped),
        "timed": "invoke" if engine else "predict",
        "rss_before_mb": rss_before / 2**20,
        "rss_delta_mb": max(0, peak - rss_before) / 2**20,
        "memory_method": "peak (VmHWM)" if exact_peak else "sampled RSS",
    }
    if keep_samples:
        out["samples_ms"] = samples_ms
    out["runtime"] = runtime
    return out


def _timed_loop(call: Callable[[Any], Any], inputs: list, rule: StopRule,
                clock: Callable[[], float]) -> tuple[list[float], float, StoppedBy]:
    """Calls on ``inputs`` cycled in order until ``rule`` says stop; each call timed alone. Back to back: nothing
    runs between two calls but the loop and the clock, so the runtime's worker threads stay as warm as in a serving
    loop; the precision check (a sort, ~20 µs per 1,000 samples) runs after every ~10 % more samples, not every call."""
    samples: list[float] = []
    n = len(inputs)
    cap = max(rule.max_seconds, rule.min_seconds)
    start = clock()
    i, next_check = 0, rule.min_runs
    while True:
        x = inputs[i % n]
        t0 = clock()
        call(x)
        t1 = clock()
        samples.append(t1 - t0)
        i += 1
        if i < rule.min_runs or t1 - start < rule.min_seconds:
            continue
        if rule.precision_pct is None:
            stopped: StoppedBy = "fixed"
            break
        if t1 - start >= cap:
            stopped = "max_seconds"
            break
        if i >= next_check:
            if precision_record(np.asarray(samples) * 1e3, rule.precision_pct)["reached"]:
                stopped = "precision"
                break
            next_check = i + max(10, i // 10)
    return samples, clock() - start, stopped


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
