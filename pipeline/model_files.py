"""Model files a user brings (``benchmark ARTIFACT``, ``export MODEL.onnx``), checked before a toolchain reads them.

ONNX Runtime, onnx.load and OpenVINO follow what a file names: an ONNX initializer's external
data ``location`` (``../../etc/passwd``, a symlink), an IR's ``.bin`` beside it, an XML entity.
So nothing outside the model's own folder is read, and a file a classifier cannot be is one line
here rather than a protobuf or C++ message later:

* ONNX: readable (a cut-short file is a protobuf DecodeError), exactly one image input
  (initializers listed as inputs aside), C, H and W static (a dynamic batch is fine: the
  pipeline runs batch 1, ``export`` fixes it to 1), external data inside the model's folder;
* OpenVINO IR: no ``<!DOCTYPE``/``<!ENTITY`` (an IR never has one: entities can read files or
  expand without bound), its ``.bin`` beside it and inside its folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError, one_line
from pipeline.fs import resolves_inside

if TYPE_CHECKING:
    import onnx

DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
FIX_DIMS = ("python -m onnxruntime.tools.make_dynamic_shape_fixed --dim_param {p} --dim_value <size> IN.onnx OUT.onnx, "
            "or export it again with a static input shape")


def check_onnx(path: Path, where: str) -> onnx.ModelProto:
    """The graph of ``path`` (external data not loaded), or one line saying why the pipeline will not run it."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends have no common type
        raise PipelineError(f"{where}: not a readable ONNX file ({one_line(exc, 100)}); cut short or not ONNX? "
                            "export it again") from None
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise PipelineError(f"{where}: takes {len(inputs)} inputs ({names}); an image classifier takes one "
                            "(N×C×H×W images): export the model with a single image input")
    dims = inputs[0].type.tensor_type.shape.dim
    dynamic = [(axis, d.dim_param or "?") for axis, d in zip("NCHW", dims) if axis != "N" and d.dim_value <= 0]
    if dynamic:
        shown = ", ".join(f"{axis} ('{p}')" for axis, p in dynamic)
        raise PipelineError(f"{where}: input {inputs[0].name} has dynamic {shown}: the benchmark and the converters need "
                            f"a fixed image size; fix it: {FIX_DIMS.format(p=dynamic[0][1])}")
    folder = path.absolute().parent
    for tensor in _initializers(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location or Path(location).is_absolute() or not resolves_inside(folder / location, folder):
            raise PipelineError(f"{where}: tensor {tensor.name} keeps its data in {location!r}, outside the model's folder "
                                f"{folder}; keep external data files beside the model (onnx.save(..., location='<file>'))")
    return model


def _initializers(graph):
    """Every initializer, subgraphs' (If, Loop) included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _initializers(sub)


def check_openvino_ir(path: Path, where: str) -> str:
    """The IR's XML text; refused with a DTD or entity, or a ``.bin`` missing or resolving outside its folder."""
    path = Path(path)
    data = path.read_bytes()
    if DTD.search(data):
        raise PipelineError(f"{where}: the XML declares a DOCTYPE or ENTITY, which no OpenVINO IR has (entities can read "
                            "other files); convert the model again with openvino.save_model")
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise PipelineError(f"{where}: its weights {weights.name} are not beside it (an OpenVINO IR is .xml + .bin)")
    if not resolves_inside(weights, path.absolute().parent):
        raise PipelineError(f"{where}: its weights {weights.name} link to {weights.resolve()}, outside the IR's folder; "
                            "copy the .bin beside the .xml")
    return data.decode("utf-8", errors="replace")
