"""Board side: verify a bundle, time and score every artifact in it, write rows in the report's schema.

Imports numpy, the runtime classes of ``pipeline.runtimes`` and the host benchmark's latency
method (``pipeline.benchmark.latency.measure_latency``), nothing else: a board's numbers are
taken exactly as the host's (init, first inference, warm-up, then runs until the host's stopping
rule ``StopRule`` ends them: p50 and p90 known to ±``precision_pct`` % or ``max_seconds`` passed,
percentiles with their intervals, RSS delta), with the host's settings carried in the bundle,
so the rows of both sit in one table keyed by (where, device, model, artifact, threads).

Accuracy is measured on the bundle's fixed test sample and compared, image by image, with
the predictions the host made on that same sample when it wrote the bundle
(``host_accuracy``, ``agreement_with_host``).
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import pipeline
from pipeline.benchmark import MAX_MIN_SECONDS, MAX_RUNS
from pipeline.device.pack import open_bundle, sha256_path
from pipeline.errors import PipelineError, one_line
from pipeline.machine import describe_device
from pipeline.report.schema import DEVICE_RESULTS_KIND, DEVICE_RESULTS_VERSION
from pipeline.runtimes import all_cores, engine_name
from pipeline.runtimes.op_time import profile, profiled


def engine_with_delegate(runtime, delegate: dict | None) -> str:
    """'tflite 2.1.0 + libvendor.so.1': the engine (``runtimes.engine_name``) and the delegate if any."""
    text = engine_name(runtime)
    return f"{text} + {delegate['library']}" if delegate else text


class ArtifactOpener:
    """Builds the runtime for one bundled artifact, every time ``measure_latency`` asks (init is timed).

    A compiled model whose bundle entry names a delegate gets it (loaded inside the timed init, as an
    application starting cold pays it); an OpenVINO IR the target's device (CPU, NPU…).
    """

    def __init__(self, path: Path, spec: dict | None, device: str, threads: int,
                 delegate: tuple[str | None, str | None] = (None, None)):
        self.path, self.spec, self.device, self.threads = path, spec, device, threads
        self.delegate = delegate  # (library, device selector): None, None = the spec's library, first device
        self.delegate_info: dict | None = None

    def __call__(self):
        from pipeline.runtimes import load  # its Runtime.format is pipeline.formats.detect's

        if self.spec is not None:
            from pipeline.device.delegate import delegate_info, load_delegate

            self.delegate_info = delegate_info(self.spec, *self.delegate)
            delegate = load_delegate(self.spec, self.delegate_info)
            return load(self.path, threads=self.threads, delegates=[delegate])
        if self.path.suffix == ".xml":
            return load(self.path, threads=self.threads, device=self.device)
        return load(self.path, threads=self.threads)


def _describe(exc: BaseException) -> str:
    text = one_line(exc, 300)
    return text if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {text}"


def score_artifact(opener: ArtifactOpener, x: np.ndarray, y: np.ndarray, host: dict | None) -> dict[str, Any]:
    """Accuracy on the whole sample, before any timing, as the host stage does: it also imports the
    runtime's library (and loads a delegate) outside the timed init."""
    from pipeline.benchmark.accuracy import predict_classes

    runtime = opener()
    try:
        preds = predict_classes(runtime, x)
    finally:
        _release(runtime)
    out: dict[str, Any] = {"accuracy": float(np.mean(preds == y))}
    if host:
        out["agreement_with_host"] = float(np.mean(preds == np.asarray(host["predictions"])))
    return out


def time_artifact(opener: ArtifactOpener, x: np.ndarray, settings: dict) -> dict[str, Any]:
    """Batch-1 latency by the host's method (``measure_latency``): init, first inference, runs, RSS."""
    from pipeline.benchmark.latency import StopRule, measure_latency, resolve_threads

    res = measure_latency(opener, x, warmup=settings["warmup"], rule=StopRule.from_settings(settings))
    runtime = res.pop("runtime")
    out: dict[str, Any] = {
        "engine": engine_with_delegate(runtime, opener.delegate_info),
        "engine_info": {k: v for k, v in (getattr(runtime, "info", None) or {}).items()
                        if isinstance(v, (str, int, float, bool)) or v is None},
        "threads_used": resolve_threads(opener.threads),
        **res,
    }
    _release(runtime)
    return out


def _release(runtime) -> None:
    """Close the engine and collect it now: a delegate must be freed before the next one opens the device."""
    close = getattr(runtime, "close", None)
    if callable(close):
        close()
    del runtime
    gc.collect()


def run_bundle(
    bundle: Path,
    *,
    threads: list[int] | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    min_seconds: float | None = None,
    precision_pct: float | None = None,
    max_seconds: float | None = None,
    name: str | None = None,
    only: list[str] | None = None,
    delegate_library: str | None = None,
    delegate_device: str | None = None,
    op_time: bool = False,
    log=print,
) -> dict[str, Any]:
    """Open ``bundle`` and measure every artifact at every thread setting; a failure becomes a row with ``error``.

    Settings default to the host benchmark's (carried in the bundle); ``threads`` 0 = all cores;
    ``precision_pct`` 0 turns the precision rule off (the fixed ``runs``/``min_seconds`` rule). ``op_time``: also
    profile each int8 artifact per op (``runtimes.op_time``, as the host benchmark does), the results' ``op_time``.
    """
    bundle = Path(bundle)
    with tempfile.TemporaryDirectory(prefix="edge-bundle-") as tmp:
        root = Path(tmp)
        manifest = open_bundle(bundle, root)  # refuses a tampered bundle before anything runs
        if not manifest.get("artifacts") or not isinstance(manifest["artifacts"], dict) or not manifest.get("sample") \
                or not isinstance(manifest["sample"], dict):
            raise PipelineError(f"{bundle}: bundle.json has an empty or no 'artifacts' or 'sample' table; rebuild it with "
                                "python -m pipeline bundle")
        digest = sha256_path(bundle)
        settings = _settings(manifest.get("settings", {}), threads, runs, warmup, min_seconds, precision_pct, max_seconds, bundle)
        keys = _selected(list(manifest["artifacts"]), only)
        x, y = _read_sample(root / manifest["sample"]["path"], bundle)
        device = describe_device(name)
        rows, per_op = [], {}
        for key in keys:
            rows += measure_bundled(root, manifest, key, x, y, settings, device["name"],
                                    (delegate_library, delegate_device), log)
            if op_time and profiled(key):
                per_op[key] = profile(root / manifest["artifacts"][key]["path"], x, manifest.get("runtime_device", "CPU"))
                log(_op_time_summary(key, per_op[key]))
    return {
        "kind": DEVICE_RESULTS_KIND,
        "version": DEVICE_RESULTS_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pipeline_version": pipeline.__version__,
        "device": device,
        "bundle": {
            "file": bundle.name,
            "sha256": digest,
            "run": manifest.get("run"),
            "target": manifest.get("target"),
            "pipeline_version": manifest.get("pipeline_version"),
            "sample": manifest["sample"],
        },
        "settings": {"batch": 1, **settings, "timer": "time.perf_counter",
                     "method": "pipeline.benchmark.latency.measure_latency"},
        "rows": rows,
        **({"op_time": per_op} if op_time else {}),
    }


def measure_bundled(root: Path, manifest: dict, key: str, x, y, settings: dict, device: str,
                    delegate: tuple[str | None, str | None], log) -> list[dict[str, Any]]:
    """Rows of one artifact, one per thread setting: scored once (all cores), then timed per setting."""
    art = manifest["artifacts"][key]
    path = root / art["path"]
    runtime_device = manifest.get("runtime_device", "CPU")
    base: dict[str, Any] = {
        "where": "device",
        "device": device,
        "model": "student",
        "artifact": key,
        "format": art.get("format", key),
        "file": Path(art["path"]).name,
        "deploy": key == manifest.get("deploy_artifact"),
        "size_bytes": art.get("size_bytes"),
        "images": int(len(y)),
        "accuracy": None,
        "error": None,
    }
    if art.get("host"):  # the host's answer on the same images, shown even when this board fails
        base.update(host_accuracy=art["host"]["accuracy"], host_reference=art["host"]["reference"])
    spec = art.get("delegate")  # the compiled model's delegate, named by its target
    scorer = ArtifactOpener(path, spec, runtime_device, 0, delegate)
    try:
        base.update(score_artifact(scorer, x, y, art.get("host")))
        failure = None
    except Exception as exc:  # one failing artifact (no delegate, no OpenVINO…) must not lose the others
        failure = _describe(exc)
    if scorer.delegate_info is not None:
        base["delegate"] = scorer.delegate_info
    rows = []
    for t in settings["threads"]:
        row = {**base, "threads": int(t), "error": failure}
        if failure is None:
            opener = ArtifactOpener(path, spec, runtime_device, int(t), delegate)
            try:
                row.update(time_artifact(opener, x, settings))
            except Exception as exc:
                row["error"] = _describe(exc)
        rows.append(row)
        log(_summary(row))
    return rows


def _settings(carried: dict, threads, runs, warmup, min_seconds, precision_pct=None, max_seconds=None,
              bundle: Path | str = "bundle") -> dict[str, Any]:
    """The measurement settings: the command line's, else the bundle's, each checked as the host config checks its own
    (``pipeline.benchmark``'s bounds; threads at most this board's cores, 0 = all). A bundle from before the precision
    rule carries no ``precision_pct`` and keeps the fixed rule it was measured with on the host (``StopRule.from_settings``)."""
    from pipeline.benchmark.latency import StopRule

    carried = carried if isinstance(carried, dict) else {}
    given = {"warmup": warmup, "min_runs": runs, "min_seconds": min_seconds, "threads": threads,
             "precision_pct": precision_pct, "max_seconds": max_seconds}
    flags = {"warmup": "--warmup", "min_runs": "--runs", "min_seconds": "--min-seconds", "threads": "--threads",
             "precision_pct": "--precision-pct", "max_seconds": "--max-seconds"}
    defaults = {"warmup": 10, "min_runs": 50, "min_seconds": 1.0, "threads": [0], "precision_pct": None,
                "max_seconds": StopRule.max_seconds}
    s, where = {}, {}
    for key in given:
        s[key] = carried.get(key, defaults[key]) if given[key] is None else given[key]
        where[key] = f"{bundle}: bundle.json settings.{key}" if given[key] is None else flags[key]
    cores = all_cores()
    bounds = {"warmup": (0, MAX_RUNS), "min_runs": (1, MAX_RUNS), "min_seconds": (0, MAX_MIN_SECONDS),
              "max_seconds": (1e-6, MAX_MIN_SECONDS)}
    for key, (lo, hi) in bounds.items():
        value = s[key]
        kind = (int, float) if key in ("min_seconds", "max_seconds") else int
        if isinstance(value, bool) or not isinstance(value, kind) or not (lo <= value <= hi):  # nan fails lo <= value
            raise PipelineError(f"{where[key]} {value!r}: must be a number from {lo:g} to {hi:g}")
    p = s["precision_pct"]  # 0 or null: the fixed rule
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100):
        raise PipelineError(f"{where['precision_pct']} {p!r}: must be a percentage in (0, 100], or 0/null for the fixed rule")
    t = s["threads"]
    if not isinstance(t, list) or not t or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= cores for v in t):
        raise PipelineError(f"{where['threads']} {t!r}: must be thread counts from 0 (all cores) to the {cores} cores of "
                            "this board; pass --threads, e.g. 1,0")
    s["min_seconds"], s["max_seconds"] = float(s["min_seconds"]), float(s["max_seconds"])
    s["precision_pct"] = None if not p else float(p)
    return s


def _read_sample(path: Path, bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundled test images (float N×C×H×W) and labels (N integers); anything else is one line."""
    problem = None
    try:
        with np.load(path, allow_pickle=False) as sample:
            if {"x", "y"} - set(sample.files):
                problem = f"holds {', '.join(sample.files) or 'nothing'}, not x and y"
            else:
                x, y = sample["x"], sample["y"]
    except (ValueError, OSError, EOFError) as exc:  # object arrays (pickles) are a ValueError with allow_pickle=False
        problem = one_line(exc, 120)
    if problem is None:
        if x.dtype.kind not in "fiu" or x.ndim != 4 or len(x) == 0:
            problem = f"x is {x.dtype} {x.shape}, not float N×C×H×W images"
        elif y.dtype.kind not in "iu" or y.shape != (len(x),):
            problem = f"y is {y.dtype} {y.shape}, not {len(x)} integer labels"
    if problem is not None:
        raise PipelineError(f"{bundle}: its sample {path.name} is not a test sample ({problem}); rebuild the bundle with "
                            "python -m pipeline bundle")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def _selected(keys: list[str], only: list[str] | None) -> list[str]:
    if not only:
        return keys
    unknown = sorted(set(only) - set(keys))
    if unknown:
        raise PipelineError(f"--only {','.join(unknown)}: not in this bundle (it has {', '.join(keys)})")
    return [k for k in keys if k in only]


def _summary(row: dict) -> str:
    head = f"{row['artifact']} threads={row['threads']}"
    if row["error"]:
        return f"{head}: FAILED: {row['error']}"
    from pipeline.benchmark.rows import precision_text  # stdlib only

    lat = row["latency_ms"]
    acc = f", accuracy {row['accuracy']:.4f}" if row.get("accuracy") is not None else ""
    host = f" (host {row['host_accuracy']:.4f}, agreement {row['agreement_with_host']:.3f})" if "host_accuracy" in row else ""
    return (f"{head}: p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms {precision_text(row.get('latency_precision'))} "
            f"({row['runs']} runs, init {row['init_ms']:.1f} ms){acc}{host}")


def _op_time_summary(key: str, table: dict) -> str:
    if not table.get("measured"):
        return f"{key} per-op time: NOT MEASURED: {table['reason']}"
    top = ", ".join(f"{op['node']} {100 * op['share']:.0f} %" for op in table["ops"][:3])
    return f"{key} per-op time: {len(table['ops'])} ops, {table['total_ms']:.3f} ms profiled; slowest {top}"
