"""Artifacts stage, for ``python -m pipeline benchmark ARTIFACT… [RECIPE]``: the user's files in the export stage's place.

Each file of ``benchmark.artifacts`` (``.onnx``, ``.tflite``, OpenVINO ``.xml`` with its ``.bin``)
gets its format key (``pipeline.formats.detect.detect_format``: read from the file, checked against its sidecar),
is copied under the export stage's file name (``student_int8.tflite``, ``openvino_int8/student.xml``…)
with its sidecar, and is run once on a calibration image, so a file that does not take the recipe's
images fails here in one line rather than as an error row. ``artifacts.json`` lists them as the
export stage's does; the target, benchmark and report stages then run unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.artifacts import atomic_write_json
from pipeline.errors import PipelineError
from pipeline.formats import FORMATS
from pipeline.formats.detect import detect_format
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import ArtifactsMetrics
from pipeline.stages import ARTIFACTS_FILE


def formats_of(paths: list[str]) -> dict[str, Path]:
    """format key -> file, one file per format (the report's rows are keyed by format)."""
    out: dict[str, Path] = {}
    for p in paths:
        key = detect_format(Path(p).expanduser())
        if FORMATS[key].delegate:  # the host has no such accelerator; the board runs it from a bundle
            raise PipelineError(f"{p}: {key}, compiled for an accelerator with its {FORMATS[key].delegate} delegate: "
                                f"benchmark the {FORMATS[key].source} it was compiled from here, and this one on the board "
                                "(python -m pipeline bundle)")
        if key in out:
            raise PipelineError(f"benchmark: {out[key]} and {p} are both {key}; benchmark one file per format in a run "
                                "(--set name=… for another run)")
        out[key] = Path(p).expanduser()
    return out


def run(ctx: StageContext) -> ArtifactsMetrics:
    from pipeline.formats.sidecar import sidecar_path
    from pipeline.data.calibration import load_calibration
    from pipeline.data import read_split_info
    from pipeline.runtimes import load

    given = formats_of(ctx.cfg.benchmark.artifacts)
    if not given:
        raise PipelineError("benchmark.artifacts: no files (python -m pipeline benchmark ARTIFACT… sets them)")
    info = read_split_info(ctx.input("data"))
    calibration, _ = load_calibration(ctx.input("data"), tuple(info["input_shape"]))
    listed = {}
    for key, src in given.items():
        dst = ctx.out / FORMATS[key].file
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        if src.suffix.lower() == ".xml":
            shutil.copyfile(src.with_suffix(".bin"), dst.with_suffix(".bin"))
        if sidecar_path(src).is_file():
            shutil.copyfile(sidecar_path(src), sidecar_path(dst))
        try:
            with load(dst) as rt:
                logits = rt.predict(calibration[:1])
        except PipelineError as exc:  # the runtime names the copy; the user knows their file by its own path
            reason = str(exc).removeprefix(f"{dst.name}: ")
            raise PipelineError(f"benchmark.artifacts: {src}: {reason}; set data.image_size/data.channels (and mean/std) "
                                "to what it was exported for") from None
        if logits.shape != (1, info["num_classes"]):
            raise PipelineError(f"benchmark.artifacts: {src}: answers with {logits.shape[1:]} logits per image, "
                                f"the data has {info['num_classes']} classes")
        listed[key] = FORMATS[key].file
    atomic_write_json(ctx.out / ARTIFACTS_FILE, listed)
    return ArtifactsMetrics(artifacts=len(listed), formats=sorted(listed), files={k: str(p) for k, p in given.items()},
                            source="given", source_reason="the given files (python -m pipeline benchmark)")
