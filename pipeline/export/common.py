"""What every family's converter takes (``ExportInputs``), shares with the others (``ExportState``) and returns
(``Artifact`` records), plus the steps they all take: console lines with timings, sidecars, calibration records and
the per-layer int8 error."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.artifacts import sha256_file
from pipeline.formats import EXPORT_SOURCE, get_format

# the int8 weight scheme's name by ``per_channel``: in sidecars and records, and onnx2tf's own ``quant_type`` words
WEIGHT_SCHEMES = {True: "per-channel", False: "per-tensor"}


@dataclass(frozen=True)
class ExportSettings:
    """The ``export`` config's knobs a converter reads (defaults: the untrained check's plain conversion)."""

    opset: int = 17
    fp32_rtol: float = 1e-3
    check_images: np.ndarray | None = None  # test images the ONNX export is checked on against PyTorch
    layer_error_images: int = 0  # 0: no per-layer error
    accuracy_control: str = "off"  # OpenVINO int8: "auto" | "off"
    validation: tuple[np.ndarray, np.ndarray] | None = None  # what auto choices are judged on
    tflite_converter: str = "onnx2tf"  # "onnx2tf" | "litert_torch" | "auto"
    tflite_recalibration: str = "off"  # "auto" | "off"
    more_images: Callable[[int], np.ndarray] | None = None  # n more normalised training images (recalibration)
    keep_float: tuple[str, ...] | str = ()  # node-name patterns or "auto" (pipeline/export/keep_float.py)


@dataclass(frozen=True)
class ExportInputs:
    """One export's weights, data facts, calibration and target scheme: the same for every family."""

    out: Path
    source: Path | None  # the checkpoint or given ONNX the formats are made from (None: ``model`` in memory)
    source_stage: str  # where it came from, for the console line
    input_shape: tuple[int, ...]
    num_classes: int
    preprocess: dict
    class_names: list[str]
    calibration: np.ndarray
    calibration_path: Path | None  # hashed into the int8 sidecars
    per_channel: bool  # the target's int8 weight scheme
    io_dtype: str  # the target's TFLite input/output dtype
    console: Any
    settings: ExportSettings = field(default_factory=ExportSettings)
    model: Any = None  # weights already built (the untrained check): no checkpoint to load
    other_weight_scheme: bool = False  # the target runs the other weight scheme too (TargetRules.other_weight_scheme)

    @property
    def scheme(self) -> str:
        return WEIGHT_SCHEMES[self.per_channel]


@dataclass(frozen=True)
class Artifact:
    """One converted file and what its sidecar says beyond the common fields."""

    key: str
    path: Path
    io: tuple[dict, dict]
    extra: dict | None = None
    from_weights: bool = False  # made from the PyTorch weights directly (litert-torch), not from the ONNX


class Pending(Protocol):
    """A conversion still running (onnx2tf's child process) when its converter returned."""

    def finish(self) -> list[Artifact]: ...

    def abandon(self) -> None:
        """Wait for it to end without taking its outcome (something else failed first)."""


@dataclass
class ExportState:
    """What one walk's converters hand each other (the ONNX path, the loaded weights) and the stage reports."""

    console: Any
    class_names: list[str]
    paths: dict[str, Path] = field(default_factory=dict)
    model: Any = None  # the (dead-channel-neutralised) weights every converter from PyTorch starts from
    meta: dict | None = None
    dead_channels: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    layer_error: dict[str, dict] = field(default_factory=dict)  # format key -> its per-layer summary
    records: dict[str, dict] = field(default_factory=dict)  # an int8 remedy's metric name -> what it decided
    val_hits: dict[str, Any] = field(default_factory=dict)  # per-image correctness on validation, by what was measured

    def step(self, label: str) -> float:
        self.console.print(f"  → {label}…")
        return time.perf_counter()

    def done(self, key: str, started: float) -> None:
        self.timings[key] = time.perf_counter() - started
        self.console.print(f"    [dim]done in {self.timings[key]:.1f}s[/dim]")

    def add(self, inputs: ExportInputs, artifact: Artifact) -> None:
        """Write the artifact's sidecar and make it a source the next converters can read."""
        from pipeline.formats.sidecar import write_sidecar

        made_from = EXPORT_SOURCE if artifact.from_weights else get_format(artifact.key).source
        sources = {"checkpoint": inputs.source} if inputs.source is not None else {}
        if made_from != EXPORT_SOURCE:
            sources["onnx"] = self.paths["onnx"]
        write_sidecar(artifact.path, format=artifact.key, input=artifact.io[0], output=artifact.io[1],
                      preprocess=inputs.preprocess, class_names=self.class_names, sources=sources, extra=artifact.extra)
        self.paths[artifact.key] = artifact.path


def calibration_record(inputs: ExportInputs, tool: str, **more) -> dict:
    """How an int8 artifact was calibrated: the tool and its settings, and which images (count, hash)."""
    digest = sha256_file(inputs.calibration_path) if inputs.calibration_path is not None else None
    return {"tool": tool, **more, "calibration_images": len(inputs.calibration), "calibration_sha256": digest}


def measure_layer_error(inputs: ExportInputs, state: ExportState, key: str, artifact: Path, reference: Path) -> None:
    """The int8 artifact's error per layer against its float twin, written beside it and kept in ``state``."""
    from pipeline.export.layer_error import layer_errors, write_layer_error
    from pipeline.export.layer_error_openvino import openvino_layer_errors
    from pipeline.formats import FORMATS
    from pipeline.formats.layer_names import short_name

    images = inputs.settings.layer_error_images
    compare = openvino_layer_errors if FORMATS[key].family == "openvino" else layer_errors
    t = state.step(f"int8 error per layer ({key} vs {reference.name}, {min(len(inputs.calibration), images)} "
                   "calibration images)")
    info = state.layer_error[key] = write_layer_error(artifact, reference, inputs.calibration, inputs.out, images,
                                                      compare=compare)
    state.done(f"layer_error_{key}", t)
    worst = info.get("worst")
    if worst:
        state.console.print(f"    worst: {short_name(worst['name'])} ({worst['op']}) {worst['sqnr_db']:.1f} dB SQNR, "
                            f"{info['layers']} layers → {info['file']}")
    else:
        state.console.print(f"    [yellow]no per-layer numbers: {info.get('error', 'no layer compared')}[/yellow]")
