"""Checks of a deploy artifact for targets that run a general-purpose runtime (TFLite on Arm, OpenVINO).

Unlike the Edge TPU, a CPU runtime runs every op; what can go wrong is an artifact that is not
what the target deploys (int8 silently skipped, float I/O where int8 was asked for, dynamic
shapes an NPU refuses) or one the runtime cannot load. Each checker returns the same report
shape as the Edge TPU's: verdict, passed, summary, and the details behind them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.errors import one_line

READY, NOT_READY = "ready", "not ready"


def check_tflite(path: Path, rules) -> dict:
    """Full-integer (for an int8 deploy artifact) with the rules' I/O dtype, then loaded and run once in LiteRT."""
    from pipeline.formats.tflite_graph import full_integer_problems, read_tflite

    from pipeline.formats.sidecar import kept_float_layers

    graph = read_tflite(Path(path))
    int8 = "int8" in rules.deploy_artifact
    kept = kept_float_layers(Path(path)) if int8 else []  # export.keep_float's layers, recorded in the sidecar
    int8_problems = full_integer_problems(graph, None if rules.io_dtype == "float32" else rules.io_dtype,
                                          float_layers=kept) if int8 else []
    run = _run_tflite_once(Path(path), rules.threads)
    problems = int8_problems + ([f"LiteRT cannot run it: {run['error']}"] if run.get("error") else [])
    report = {
        "checker": "tflite",
        "verdict": NOT_READY if problems else READY,
        "passed": not problems,
        "summary": "",
        "artifact": rules.deploy_artifact,
        "ops_total": len(graph.ops),
        "op_counts": graph.op_counts(),
        "full_integer": not int8_problems if int8 else None,
        **({"kept_float": kept} if kept else {}),
        "io": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in graph.inputs + graph.outputs],
        "parameter_bytes": sum(t.nbytes for t in graph.tensors if t.is_constant),
        "problems": problems,
        **run,
    }
    what = f"full-integer {rules.io_dtype} I/O, " if int8 and not problems else ""
    what = what.replace("full-integer", f"integer ({len(kept)} layer(s) kept in float)") if kept else what
    report["summary"] = (f"{report['verdict']}: {len(graph.ops)} ops, {what}runs in LiteRT ({run.get('threads')} threads)"
                         if not problems else f"{NOT_READY}: {'; '.join(problems[:3])}")
    return report


def _run_tflite_once(path: Path, threads: int) -> dict:
    """One invoke on zeros: proves the runtime loads it (XNNPACK applies by default in LiteRT)."""
    from pipeline.runtimes.tflite_rt import interpreter_module
    from pipeline.runtimes.base import all_cores

    module = interpreter_module()
    if module is None:
        return {"error": "no TFLite runtime installed (pip install ai-edge-litert)"}
    n = threads or all_cores()
    try:
        t = time.perf_counter()
        interp = module.Interpreter(model_path=str(path), num_threads=n)
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        interp.invoke()
        return {"runtime": "LiteRT", "threads": n, "first_run_ms": round(1e3 * (time.perf_counter() - t), 2)}
    except Exception as exc:
        return {"runtime": "LiteRT", "threads": n, "error": one_line(exc)}


def check_openvino(path: Path, rules) -> dict:
    """int8 (FakeQuantize present) for an int8 deploy artifact, static shapes for an NPU, every op supported
    by the device's plugin (``query_model``) and compiled for it. Without the device, checked on CPU."""
    import openvino as ov

    from pipeline.runtimes.openvino_core import core as ov_core
    from pipeline.target.device import device_status

    core = ov_core()
    status = device_status(rules, list(core.available_devices))
    device = status["device"] if status["available"] else "CPU"
    model = core.read_model(str(path))
    ops = [op for op in model.get_ops() if op.get_type_name() not in ("Parameter", "Result", "Constant")]
    fake_quant = sum(op.get_type_name() == "FakeQuantize" for op in ops)
    problems = []
    if "int8" in rules.deploy_artifact and fake_quant == 0:
        problems.append("no FakeQuantize ops: the IR is not int8")
    if status["device"] != "CPU" and model.is_dynamic():
        problems.append(f"dynamic shapes: the {status['device']} plugin needs static shapes (export with batch 1)")
    supported = core.query_model(model, device)
    unsupported = sorted({op.get_type_name() for op in ops if op.get_friendly_name() not in supported})
    if unsupported:
        problems.append(f"ops the {device} plugin does not support: {', '.join(unsupported)}")
    try:
        core.compile_model(model, device)
    except Exception as exc:
        problems.append(f"{device} plugin cannot compile it: {one_line(exc)}")
    verdict = NOT_READY if problems else READY if status["available"] else f"{READY} on CPU ({status['device']} absent here)"
    summary = (f"{verdict}: {len(ops)} ops, {fake_quant} FakeQuantize, all supported and compiled on {device}"
               if not problems else f"{NOT_READY}: {'; '.join(problems[:3])}")
    return {
        "checker": "openvino",
        "verdict": verdict,
        "passed": not problems,
        "summary": summary,
        "artifact": rules.deploy_artifact,
        "checked_on": device,
        "ops_total": len(ops),
        "fake_quantize_ops": fake_quant,
        "static_shapes": not model.is_dynamic(),
        "unsupported_ops": unsupported,
        "problems": problems,
        "device": status,
    }
