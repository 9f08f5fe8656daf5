"""The JSON sidecar beside every artifact: everything needed to feed it and to trust it.

``student_int8.tflite`` gets ``student_int8.tflite.json`` with the input name/shape/layout
and dtype, the preprocessing (image size, channels, mean/std), the quantisation of an
int8 input/output (scale, zero point), class names, sha256 of the files it was made from
and the tool versions. A runtime on a board reads it instead of guessing the layout.
Torch-free (boards read sidecars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_json, read_json, sha256_file, tool_versions
from pipeline.errors import PipelineError

SIDECAR_VERSION = 1


def sidecar_path(artifact: Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def tensor_spec(name: str, shape, dtype: str, layout: str | None = None, scale=None, zero_point=None) -> dict[str, Any]:
    """One input/output description; ``quantization`` only when the tensor is integer-quantised."""
    spec: dict[str, Any] = {"name": name, "shape": [int(d) for d in shape], "dtype": dtype}
    if layout is not None:
        spec["layout"] = layout
    spec["quantization"] = {"scale": [float(s) for s in scale], "zero_point": [int(z) for z in zero_point]} if scale else None
    return spec


def tflite_io(path: Path) -> tuple[dict, dict]:
    """Input and output specs of a .tflite read from the file itself (NHWC: onnx2tf's layout for 4-D input)."""
    from pipeline.formats.tflite_graph import read_tflite

    graph = read_tflite(path)
    t_in, t_out = graph.inputs[0], graph.outputs[0]
    layout = "NHWC" if len(t_in.shape) == 4 else None
    return (
        tensor_spec(t_in.name, t_in.shape, t_in.dtype, layout, t_in.scale, t_in.zero_point),
        tensor_spec(t_out.name, t_out.shape, t_out.dtype, None, t_out.scale, t_out.zero_point),
    )


def nchw_io(input_shape: tuple[int, int, int], num_classes: int, input_name: str = "input", output_name: str = "logits") -> tuple[dict, dict]:
    """Specs of a float batch-1 NCHW model (ONNX, OpenVINO IR)."""
    return (
        tensor_spec(input_name, (1, *input_shape), "float32", "NCHW"),
        tensor_spec(output_name, (1, num_classes), "float32"),
    )


def write_sidecar(
    artifact: Path,
    *,
    format: str,
    input: dict,
    output: dict,
    preprocess: dict,
    class_names: list[str],
    sources: dict[str, Path],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``<artifact>.json``; ``sources`` maps a role ("checkpoint", "onnx") to the file hashed into it."""
    artifact = Path(artifact)
    doc = {
        "sidecar_version": SIDECAR_VERSION,
        "format": format,
        "file": artifact.name,
        "sha256": sha256_file(artifact),
        "input": input,
        "output": output,
        "layout": input.get("layout"),
        "preprocess": {
            "image_size": int(preprocess["image_size"]),
            "channels": int(preprocess["channels"]),
            "mean": [float(m) for m in preprocess["mean"]],
            "std": [float(s) for s in preprocess["std"]],
        },
        "class_names": list(class_names),
        "sources": {role: {"file": Path(p).name, "sha256": sha256_file(Path(p))} for role, p in sources.items()},
        "tools": tool_versions(),
        **(extra or {}),
    }
    path = sidecar_path(artifact)
    atomic_write_json(path, doc)
    return path


def read_sidecar(artifact: Path, required: bool = False) -> dict | None:
    """The sidecar of ``artifact``, or None when it has none (``required`` turns that into a PipelineError)."""
    path = sidecar_path(artifact)
    if not path.is_file():
        if required:
            raise PipelineError(f"{path}: sidecar missing; re-run the export stage (--from export)")
        return None
    try:
        doc = read_json(path)
    except ValueError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or "input" not in doc:
        raise PipelineError(f"{path}: not an artifact sidecar (no 'input' entry)")
    return doc


def kept_float_layers(artifact: Path) -> list[str]:
    """The layers ``export.keep_float`` left in float in an int8 artifact (its sidecar's record): the full-integer
    checks accept exactly these as float."""
    doc = read_sidecar(artifact) or {}
    return list(((doc.get("quantization") or {}).get("keep_float") or {}).get("kept") or [])
