"""Host side: pack what a target runs, a fixed test sample and the host's answers on it into one tar.

``python -m pipeline bundle runs/NAME --target rpi4 -o rpi4.tar``. The bundle holds

* ``models/<path in its stage folder>`` + ``<…>.json`` — the artifacts the target's runtime executes
  (from ``05_export/artifacts.json``, an IR with its ``.bin``; for the Edge TPU also the
  ``*_edgetpu.tflite`` that ``06_target`` holds when the compiler ran, e.g. through
  ``docker/compile`` or ``python -m pipeline target RUN --compiled DIR``) with their sidecars (layout, quantisation, mean/std, classes);
* ``sample.npz`` — the first ``samples`` test images, preprocessed float32 N×C×H×W, and int64 labels;
* ``bundle.json`` — run, target, the artifacts with the host's predictions and accuracy on that
  exact sample (so a board's numbers are compared like for like), and every file's sha256.

This side may use torch (``pipeline.data`` does); the board side never imports this module.
"""

from __future__ import annotations

import io
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

import pipeline
from pipeline.artifacts import COMPANIONS, artifact_size, read_artifacts, read_json
from pipeline.benchmark.latency import StopRule
from pipeline.device.pack import write_bundle
from pipeline.errors import PipelineError, printable
from pipeline.formats import EDGETPU_KEY
from pipeline.fs import not_an_input
from pipeline.stages import ARTIFACTS_FILE, RESULTS_FILE, stage_folder

DEFAULT_SAMPLES = 200


def target_rules(target: str):
    from pipeline.target import TARGETS

    if target not in TARGETS:
        import difflib

        close = difflib.get_close_matches(target, list(TARGETS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise PipelineError(f"--target {target}: unknown (known: {', '.join(sorted(TARGETS))}){hint}")
    return TARGETS[target]


def select_artifacts(run_dir: Path, target: str) -> dict[str, Path]:
    """Format key → artifact file, for the formats ``target``'s runtime executes, deploy artifact first."""
    rules = target_rules(target)
    export = stage_folder(run_dir, "export")
    exported = read_artifacts(export, remedy="finish the export stage first (python -m pipeline run <recipe> --until export)")
    runs = runtime_formats(rules.runtime)
    wanted = [k for k in runs if k in exported]
    if rules.deploy_artifact in exported and rules.deploy_artifact not in wanted:
        wanted.insert(0, rules.deploy_artifact)
    wanted.sort(key=lambda k: k != rules.deploy_artifact)
    if not wanted:
        raise PipelineError(
            f"{export / ARTIFACTS_FILE}: none of the formats target {target} runs ({', '.join(runs) or 'none'}) "
            "was exported; add them to export.formats and re-run"
        )
    chosen = {key: export / exported[key] for key in wanted}
    compiled = compiled_edgetpu(run_dir) if rules.compiler == "edgetpu_compiler" else None
    if compiled is not None:
        chosen = {EDGETPU_KEY: compiled, **chosen}
    for key, path in chosen.items():
        if not path.is_file():
            raise PipelineError(f"{path}: {key} artifact listed but missing; re-run the export stage (--from export)")
    return chosen


def runtime_formats(runtime: str) -> list[str]:
    """The bundled formats ``runtime`` executes (the format table's rows), in table order."""
    from pipeline.formats import format_keys

    try:
        return format_keys(runtime=runtime, bundled=True)
    except KeyError as exc:  # a target whose runtime runs no export format
        raise PipelineError(f"target runtime: {exc.args[0]}") from None


def compiled_edgetpu(run_dir: Path) -> Path | None:
    """The model edgetpu_compiler wrote into 06_target, if it ran (it is absent where no compiler is installed):
    the one its manifest records (an in-run compile, or one imported by ``python -m pipeline target --compiled``),
    else any there (``docker/compile`` writes into the folder without recording it)."""
    from pipeline.artifacts import Manifest

    folder = stage_folder(run_dir, "target")
    manifest = Manifest.read(folder)
    recorded = ((manifest.metrics.get("compiler_result") or {}).get("model") if manifest else None) or ""
    if recorded and Path(recorded).name == recorded and (folder / recorded).is_file():
        return folder / recorded
    found = sorted(folder.rglob("*_edgetpu.tflite"))
    return found[0] if found else None


def _sidecar(path: Path) -> Path | None:
    side = path.with_name(path.name + ".json")
    return side if side.is_file() else None


def _relative(run_dir: Path, path: Path) -> str:
    """``student_int8.tflite``, ``openvino_fp32/student.xml``: the path inside its stage folder."""
    rel = PurePosixPath(Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix())
    return str(PurePosixPath(*rel.parts[1:]))


def host_predictions(path: Path, x: np.ndarray) -> np.ndarray:
    """Top-1 classes of one artifact on the host, by the benchmark stage's runtime and accuracy code."""
    from pipeline.benchmark.accuracy import predict_classes
    from pipeline.runtimes import load

    with load(path, threads=0) as runtime:
        return predict_classes(runtime, x)


def benchmark_settings(run_dir: Path, target_threads: int = 0) -> dict:
    """warmup, the stopping rule (``latency.StopRule``) and threads the host benchmark used (its results file), else
    the config defaults; the threads follow the target's (``board_threads``)."""
    results = stage_folder(run_dir, "benchmark") / RESULTS_FILE
    if results.is_file():
        s = read_json(results).get("settings", {})
    else:
        from pipeline.config import BenchmarkConfig

        s = BenchmarkConfig().model_dump()
    return {"warmup": int(s["warmup"]), **StopRule.from_settings(s).settings(),
            "threads": board_threads([int(t) for t in s["threads"]], target_threads)}


def board_threads(host: list[int], target: int) -> list[int]:
    """The thread settings the board times by default: the host's, with "all cores" (0) spelled as the target's
    own count (rpi4: 4), which is also added when missing, so the board always times what the target runs."""
    if not target:
        return host
    out = [target if t == 0 else t for t in host]
    return list(dict.fromkeys(out + [target]))


def built_for(run_dir: Path) -> str | None:
    """The target the run's artifacts were made for (the benchmark stage records it), None if unknown."""
    results = stage_folder(run_dir, "benchmark") / RESULTS_FILE
    try:
        return read_json(results)["run"]["target"] if results.is_file() else None
    except (ValueError, KeyError, TypeError):
        return None


def warn_target_mismatch(run_dir: Path, target: str, chosen: dict[str, Path]) -> None:
    """A bundle for another target than the run's carries artifacts made by the run's target's rules (I/O dtype…)."""
    made_for = built_for(run_dir)
    if made_for is None or made_for == target:
        return
    rules = target_rules(target)
    dtypes = {}
    for key, path in chosen.items():
        side = _sidecar(path)
        dtype = (read_json(side).get("input") or {}).get("dtype") if side else None
        if dtype and "int8" in key:
            dtypes[key] = dtype
    io = "; ".join(f"{k} has {d} I/O, {target}'s rules say {rules.io_dtype}" for k, d in dtypes.items() if d != rules.io_dtype)
    print(f"warning: {printable(run_dir)} was built for target {made_for}, not {target}"
          f"{f' ({io})' if io else ''}: set target.name: {target} and re-run for artifacts made to its rules",
          file=sys.stderr)


def test_sample(run_dir: Path, samples: int) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.data import load_split

    x, y = load_split(stage_folder(run_dir, "data"), "test")
    if samples <= 0:
        raise PipelineError(f"--samples {samples}: must be at least 1")
    return np.ascontiguousarray(x[:samples], dtype=np.float32), y[:samples].astype(np.int64)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """An .npz with fixed zip timestamps (np.savez stamps the current time), so bundles are reproducible."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def make_bundle(run_dir: Path, target: str, output: Path, samples: int = DEFAULT_SAMPLES) -> Path:
    """Write the bundle for ``target`` from a finished run; print and return its path."""
    run_dir, output = Path(run_dir), Path(output)
    if not run_dir.is_dir():
        raise PipelineError(f"{run_dir}: no such run folder")
    if output.is_dir():
        raise PipelineError(f"-o {output}: is a folder; give the bundle's file name, e.g. {output / f'{target}.tar'}")
    rules = target_rules(target)
    chosen = select_artifacts(run_dir, target)
    not_an_input(output, [*chosen.values(), *filter(None, map(_sidecar, chosen.values()))])
    warn_target_mismatch(run_dir, target, chosen)
    x, y = test_sample(run_dir, samples)

    files: dict[str, Path] = {}
    artifacts: dict[str, dict] = {}
    host_preds: dict[str, np.ndarray] = {}
    compiled_from = rules.deploy_artifact  # what the target stage handed the vendor compiler
    for key, path in chosen.items():
        member = f"models/{_relative(run_dir, path)}"  # keeps folders: the OpenVINO IRs are all student.xml
        files[member] = path
        entry = {"path": member, "sidecar": None, "format": key, "size_bytes": artifact_size(path), "host": None}
        side = _sidecar(path)
        if side is None and key == EDGETPU_KEY and compiled_from in chosen:
            side = _sidecar(chosen[compiled_from])  # the compiled model keeps the int8 model's I/O
        if side is not None:
            entry["sidecar"] = member + ".json"
            files[entry["sidecar"]] = side
        for suffix in COMPANIONS.get(path.suffix, ()):
            companion = path.with_suffix(suffix)
            if companion.is_file():
                files[str(PurePosixPath(member).with_suffix(suffix))] = companion
        if key != EDGETPU_KEY:  # the host has no Edge TPU: the compiled model is compared with what it was compiled from
            host_preds[key] = host_predictions(path, x)
        artifacts[key] = entry
    for key, entry in artifacts.items():
        ref = key if key in host_preds else compiled_from
        if ref in host_preds:
            preds = host_preds[ref]
            entry["host"] = {
                "reference": ref,
                "accuracy": float((preds == y).mean()),
                "predictions": preds.tolist(),
            }

    manifest = {
        "pipeline_version": pipeline.__version__,
        "run": run_dir.name,
        "target": target,
        "runtime": rules.runtime,
        "runtime_device": rules.device,
        "target_threads": rules.threads,
        "settings": benchmark_settings(run_dir, rules.threads),  # the host's settings unless told otherwise
        "deploy_artifact": EDGETPU_KEY if EDGETPU_KEY in artifacts else rules.deploy_artifact,
        "sample": {"path": "sample.npz", "split": "test", "count": int(len(y)), "shape": list(x.shape)},
        "artifacts": artifacts,
    }
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.npz"
        sample.write_bytes(npz_bytes(x=x, y=y))
        files["sample.npz"] = sample
        digest = write_bundle(output, files, manifest)
    print(f"bundle: {output} ({len(artifacts)} artifacts: {', '.join(artifacts)}; {len(y)} test images) sha256 {digest}")
    return output
