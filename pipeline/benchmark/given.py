"""Artifacts stage, for ``python -m pipeline benchmark ARTIFACT… [RECIPE]``: the user's files in the export stage's place.

Each file of ``benchmark.artifacts`` (``.onnx``, ``.tflite``, OpenVINO ``.xml`` with its ``.bin``)
gets its format key (its sidecar's; else read from the file: int8 or float tensors, FakeQuantize
nodes), is copied under the export stage's file name (``student_int8.tflite``, ``openvino_int8/student.xml``…)
with its sidecar, and is run once on a calibration image, so a file that does not take the recipe's
images fails here in one line rather than as an error row. ``artifacts.json`` lists them as the
export stage's does; the target, benchmark and report stages then run unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.artifacts import atomic_write_json
from pipeline.errors import PipelineError
from pipeline.formats import FORMATS, primary
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import ArtifactsMetrics
from pipeline.stages import ARTIFACTS_FILE

SUFFIXES = tuple(dict.fromkeys(Path(f.file).suffix for f in FORMATS.values()))  # .onnx, .tflite, .xml


def detect_format(path: Path) -> str:
    """The export format key of a file, decided by the file: its suffix gives the family, its content the precision
    (int8 tensors, QuantizeLinear or FakeQuantize nodes). A sidecar may name the format within that (fp16 vs fp32 IR);
    one that claims another family or int8-ness is one line (a sidecar is a hint written beside the file, not proof)."""
    from pipeline.formats.sidecar import read_sidecar, sidecar_path

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise PipelineError(f"{path}: not an artifact the benchmark can run (known: {', '.join(SUFFIXES)}; a checkpoint goes to "
                            "python -m pipeline export)")
    if not path.is_file():
        raise PipelineError(f"{path}: no such file")
    found = _format_from_content(path)
    sidecar = read_sidecar(path)
    claimed = sidecar.get("format") if sidecar else None
    if claimed not in FORMATS:
        return found
    said, is_ = FORMATS[claimed], FORMATS[found]
    if said.family != is_.family or (said.precision == "int8") != (is_.precision == "int8"):
        kind = f"{is_.family} {'int8' if is_.precision == 'int8' else 'float'}"
        raise PipelineError(f"{path}: its sidecar {sidecar_path(path).name} says {claimed}, but the file is {kind} ({found}); "
                            "remove the sidecar or give the file it was written for")
    return claimed


def _format_from_content(path: Path) -> str:
    from pipeline.model_files import check_onnx, check_openvino_ir

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        ops = {n.op_type for n in check_onnx(path, str(path)).graph.node}
        return primary(precision="int8" if "QuantizeLinear" in ops else "fp32", family="onnx")  # QDQ: onnx2qdq
    if suffix == ".tflite":
        from pipeline.formats.tflite_graph import read_tflite

        graph = read_tflite(path)  # full-integer: activations are int8 (int8 weights alone = dynamic-range, a float model)
        integer = [t for t in graph.tensors if not t.is_constant and t.dtype in ("int8", "uint8")]
        return primary(precision="int8" if integer else "fp32", family="tflite")
    text = check_openvino_ir(path, str(path))
    precision = "int8" if 'type="FakeQuantize"' in text else "fp16" if 'element_type="f16"' in text else "fp32"
    return primary(precision=precision, family="openvino")


def formats_of(paths: list[str]) -> dict[str, Path]:
    """format key -> file, one file per format (the report's rows are keyed by format)."""
    out: dict[str, Path] = {}
    for p in paths:
        key = detect_format(Path(p).expanduser())
        if key in out:
            raise PipelineError(f"benchmark: {out[key]} and {p} are both {key}; benchmark one file per format in a run "
                                "(--set name=… for another run)")
        out[key] = Path(p).expanduser()
    return out


def run(ctx: StageContext) -> ArtifactsMetrics:
    from pipeline.formats.sidecar import sidecar_path
    from pipeline.export.stage import load_calibration
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
