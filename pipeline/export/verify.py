"""Every exported artifact run on the test split by its runtime and held to its fidelity rule against PyTorch; the
int8 TFLite also checked full-integer from its own flatbuffer; the teacher's ONNX (the latency baseline) checked too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import artifact_size
from pipeline.export.common import ExportInputs, ExportState
from pipeline.formats import FORMATS
from pipeline.stages import TEACHER_ONNX


def fidelity(inputs: ExportInputs, state: ExportState, listed: dict[str, str], x: np.ndarray,
             y: np.ndarray) -> tuple[dict[str, dict], float]:
    """Run every listed artifact on the test split with its runtime; compare with the PyTorch source."""
    from pipeline.export.fidelity import compare
    from pipeline.runtimes import load

    t = state.step(f"fidelity: {len(listed)} artifacts × {len(y)} test images against PyTorch")
    with load(inputs.source) as torch_rt:
        reference = torch_rt.predict(x)
    source_acc = float((reference.argmax(1) == y).mean())
    rows: dict[str, dict] = {}
    for key in listed:
        path = state.paths[key]
        try:
            with load(path) as rt:
                row = compare(key, rt.predict(x), reference, y, fp32_rtol=inputs.settings.fp32_rtol)
                row.update(runtime=rt.name, runtime_info={k: v for k, v in rt.info.items() if isinstance(v, (str, int, float))})
        except Exception as exc:  # one artifact that will not run must not hide the others' numbers
            row = {"precision": None, "accuracy": None, "passed": False, "message": f"cannot run: {' '.join(str(exc).split())[:300]}"}
        row.update(file=listed[key], bytes=artifact_size(path))
        if FORMATS[key].family == "tflite" and FORMATS[key].precision == "int8":  # what the Edge TPU compiler demands
            row["op_check"] = op_check(state, key, path, inputs.io_dtype)
            if not row["op_check"]["passed"]:
                row["passed"] = False
                row["message"] = "; ".join(filter(None, [row["message"], "op check: not full-integer"]))
        rows[key] = row
        print_row(state.console, key, row)
    state.done("fidelity", t)
    return rows, source_acc


def op_check(state: ExportState, key: str, path: Path, io_dtype: str) -> dict:
    """Full-integer verdict of an int8 TFLite from its own flatbuffer (what the Edge TPU compiler demands)."""
    from rich.markup import escape

    from pipeline.formats.tflite_graph import full_integer_problems, read_tflite

    from pipeline.formats.sidecar import kept_float_layers

    graph = read_tflite(path)
    kept = kept_float_layers(path)
    problems = full_integer_problems(graph, io_dtype, float_layers=kept)
    counts = graph.op_counts()
    if problems:
        state.console.print(f"  [bold red]✗ {key} op check: not full-integer {io_dtype}: "
                            f"{escape('; '.join(problems[:3]))}[/bold red]")
    else:
        what = f"integer but {len(kept)} layer(s) kept in float" if kept else "all integer"
        state.console.print(f"  [green]✓[/green] {key} op check: {sum(counts.values())} ops, {what}, {io_dtype} I/O")
    return {"passed": not problems, "problems": problems, "op_counts": counts, "io_dtype": io_dtype,
            **({"kept_float": kept} if kept else {})}


def teacher_onnx(inputs: ExportInputs, state: ExportState, checkpoint: Path, x: np.ndarray, y: np.ndarray) -> dict:
    """The teacher as ONNX (the latency baseline), checked against its PyTorch self like any fp32 export."""
    from pipeline.export.fidelity import compare
    from pipeline.export.torch2onnx import torch2onnx
    from pipeline.formats.sidecar import nchw_io, write_sidecar
    from pipeline.runtimes import load

    settings = inputs.settings
    t = state.step(f"teacher ONNX (opset {settings.opset}), the latency baseline")
    with load(checkpoint) as torch_rt:
        model = torch_rt.model
        reference = torch_rt.predict(x)
        path = torch2onnx(model, inputs.input_shape, inputs.out / TEACHER_ONNX, opset=settings.opset,
                          check_inputs=settings.check_images, rtol=settings.fp32_rtol)
    spec_in, spec_out = nchw_io(inputs.input_shape, inputs.num_classes)
    write_sidecar(path, format="onnx", input=spec_in, output=spec_out, preprocess=inputs.preprocess,
                  class_names=state.class_names, sources={"checkpoint": checkpoint}, extra={"model": "teacher"})
    with load(path) as rt:
        row = compare("onnx", rt.predict(x), reference, y, fp32_rtol=settings.fp32_rtol)
    row.update(file=TEACHER_ONNX, bytes=artifact_size(path))
    state.done("teacher_onnx", t)
    print_row(state.console, "teacher onnx", row)
    return row


def print_row(console, key: str, row: dict) -> None:
    from rich.markup import escape

    if row["accuracy"] is None:
        numbers = "no numbers"
    elif row["precision"] == "int8":
        numbers = f"accuracy {row['accuracy']:.2%} vs fp32 {row['reference_accuracy']:.2%}, agreement {row['agreement']:.2%}"
    else:
        numbers = f"agreement {row['agreement']:.2%}, max |Δlogit| {row['max_abs_logit_diff']:.1e}, accuracy {row['accuracy']:.2%}"
    if row["passed"]:
        console.print(f"  [green]✓[/green] {key}: {numbers}")
    else:
        console.print(f"  [bold red]✗ {key} FAILED fidelity: {escape(row['message'])} ({numbers})[/bold red]")
