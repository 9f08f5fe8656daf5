"""The ONNX export every other format converts from: torch2onnx of the (dead-channel-neutralised) weights, or the
user's own ONNX as given (``python -m pipeline export MODEL.onnx``)."""

from __future__ import annotations

from pipeline.export.common import Artifact, ExportInputs, ExportState
from pipeline.formats import FORMATS


def convert_onnx(inputs: ExportInputs, state: ExportState, keys: list[str]) -> list[Artifact]:
    """``student.onnx``; loads the weights into ``state`` for the converters that start from PyTorch (litert-torch)."""
    from pipeline.export.torch2onnx import torch2onnx
    from pipeline.formats.sidecar import nchw_io

    (key,) = keys
    if inputs.source is not None and inputs.source.suffix == ".onnx":
        return [_given_onnx(inputs, key)]
    model = _load_weights(inputs, state)
    t = state.step(f"ONNX (opset {inputs.settings.opset}) from {inputs.source_stage}/{_source_name(inputs)}")
    path = torch2onnx(model, inputs.input_shape, inputs.out / FORMATS[key].file, opset=inputs.settings.opset,
                      check_inputs=inputs.settings.check_images, rtol=inputs.settings.fp32_rtol)
    state.done(key, t)
    extra = {"dead_channels_zeroed": state.dead_channels} if state.dead_channels else None
    return [Artifact(key, path, nchw_io(inputs.input_shape, inputs.num_classes), extra)]


def _load_weights(inputs: ExportInputs, state: ExportState):
    """The weights with dead and silent channels zeroed (``neutralize_dead_channels`` on the calibration images), so BN
    folding cannot inflate the int8 scales; kept in ``state``."""
    from pipeline.export.dead_channels import neutralize_dead_channels

    if inputs.model is not None:
        model, meta = inputs.model, {}
    else:
        from pipeline.models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(inputs.source)
    state.class_names = meta.get("class_names") or state.class_names
    state.dead_channels = neutralize_dead_channels(model.eval(), inputs.calibration)
    state.model, state.meta = model, meta
    if state.dead_channels:
        state.console.print(f"  {sum(state.dead_channels.values())} dead channels (BN variance ≈ 0, or silent on every "
                            f"calibration image with an inflated BN gain) in {len(state.dead_channels)} layers zeroed "
                            "before export, so BN folding cannot inflate int8 scales")
    return model


def _given_onnx(inputs: ExportInputs, key: str) -> Artifact:
    """The user's ONNX copied as it is: every format converts from it as given."""
    import shutil

    import onnx

    from pipeline.formats.sidecar import nchw_io

    path = inputs.out / FORMATS[key].file
    shutil.copyfile(inputs.source, path)
    graph = onnx.load(str(path), load_external_data=False).graph
    io = nchw_io(inputs.input_shape, inputs.num_classes, graph.input[0].name, graph.output[0].name)
    return Artifact(key, path, io, {"given": True})


def _source_name(inputs: ExportInputs) -> str:
    return inputs.source.name if inputs.source is not None else "untrained weights"
