"""On-device benchmarking end to end: a real run → bundle → the runner in a torch-free venv → merged report.

The venv holds exactly docker/requirements-device.txt (what the rpi/coral images install) and
no torch; the runner runs from this checkout through PYTHONPATH, as in the images. It is built
once per requirements set (about 10 s from the local mirror) and kept under the temp folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import jsonschema
import pytest
import torch

from conftest import TINY_RECIPE
from pipeline.artifacts import read_json
from pipeline.config import load_config
from pipeline.device.bundle import make_bundle
from pipeline.report.device_results import read_device_results
from pipeline.errors import PipelineError
from pipeline.report.model import json_schema, validate_report
from pipeline.run import run_pipeline, stage_dir
from pipeline.runtimes.op_time import NOT_MEASURED

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "docker" / "requirements-device.txt"
TARGET = "edge_tpu"  # a tflite target: its bundle holds tflite_int8 + tflite_fp32 (+ the compiled model when present)


# --- fixtures ---------------------------------------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def device_venv() -> Path:
    """A venv with docker/requirements-device.txt and nothing else, cached by requirement set and Python version."""
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "edge-pipeline-device-venv"
    root.mkdir(exist_ok=True)
    venv, ready = root / key, root / f"{key}.ready"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
        if not (ready.exists() and _venv_python(venv).exists()):
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            subprocess.run([str(_venv_python(venv)), "-m", "pip", "install", "-q", "--no-deps", "-r", str(REQUIREMENTS)],
                           check=True, timeout=300, capture_output=True)
            ready.write_text(REQUIREMENTS.read_text())
    return venv


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny run: trained, exported to TFLite, benchmarked on the host (short timing settings)."""
    tmp = tmp_path_factory.mktemp("device_run")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(TINY_RECIPE + f"runs_dir: {tmp / 'runs'}\n")
    cfg = load_config(recipe, {
        "distill.epochs": 4,
        "distill.lr": 0.1,  # a student well above chance (~55 %), so per-image agreement means something
        "qat.enabled": False,  # the device side does not care which weights were exported; saves a stage
        "export.formats": ["onnx", "tflite_fp32", "tflite_int8", "openvino_fp32"],
        "benchmark.threads": [1],
        "benchmark.warmup": 2,
        "benchmark.min_runs": 5,
        "benchmark.min_seconds": 0.0,
    })
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on 2 busy shared cores, 2 spinning intra-op threads make tiny epochs ~50× slower
    try:
        try:
            import pipeline.target.stage  # noqa: F401
        except ModuleNotFoundError:  # the target stage not written yet: run the benchmark stage on its own
            run_pipeline(cfg, until="export")
            _benchmark_stage_alone(cfg)
        else:
            run_pipeline(cfg, until="benchmark")
    finally:
        torch.set_num_threads(threads)
    return cfg.run_dir


def _benchmark_stage_alone(cfg) -> None:
    from pipeline.benchmark.stage import run
    from pipeline.run import StageContext

    inputs = {s: stage_dir(cfg, s) for s in ("data", "teacher", "distill", "qat", "export")}
    out = stage_dir(cfg, "benchmark")
    out.mkdir()
    run(StageContext(cfg=cfg, out=out, inputs=inputs, cache=cfg.run_dir / "cache"))


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory) -> Path:
    return make_bundle(tiny_run, TARGET, tmp_path_factory.mktemp("bundle") / f"{TARGET}.tar")


def _run_device(venv: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([str(_venv_python(venv)), "-m", "pipeline.device", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def _validator(definition: str):
    schema = json_schema()
    return jsonschema.Draft202012Validator({"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"})


# --- tests --------------------------------------------------------------------------------------------------------


def test_bundle_holds_the_targets_artifacts_a_sample_and_the_hosts_answers(tiny_run, bundle):
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("bundle.json"))
    assert names == {"bundle.json", *manifest["files"]}
    assert list(manifest["artifacts"]) == ["tflite_int8", "tflite_fp32"]  # deploy artifact first, no ONNX for a TFLite target
    assert {"models/student_int8.tflite", "models/student_int8.tflite.json", "sample.npz"} <= names
    bench = read_json(tiny_run / "07_benchmark" / "benchmark.json")
    n_test = bench["data"]["images"]
    assert manifest["sample"]["count"] == n_test == 120  # the tiny test split is smaller than the 200-image sample
    assert manifest["settings"] == {"warmup": 2, "min_runs": 5, "min_seconds": 0.0, "precision_pct": 3.0, "max_seconds": 0.5,
                                    "confidence": 0.95, "threads": [1]}  # the host's stopping rule, carried to the board
    top1 = {r["stage"]: r["top1"] for r in bench["accuracy"]}
    for key, art in manifest["artifacts"].items():
        assert len(art["host"]["predictions"]) == manifest["sample"]["count"]
        assert len(set(art["host"]["predictions"])) >= 5 and art["host"]["accuracy"] > 0.3  # a real classifier
        assert art["host"]["accuracy"] == pytest.approx(top1[key], abs=1e-12)  # same images, same runtime as the host benchmark
    again = make_bundle(tiny_run, TARGET, bundle.with_name("again.tar"))
    assert again.read_bytes() == bundle.read_bytes()  # reproducible: same run, same bytes


def test_runner_in_a_torch_free_venv_matches_the_host_and_fits_the_report_schema(device_venv, bundle, tmp_path):
    assert subprocess.run([str(_venv_python(device_venv)), "-c", "import torch"], capture_output=True).returncode != 0
    out = tmp_path / "pi.json"
    done = _run_device(device_venv, "run", bundle, "-o", out, "--name", "venv-board", "--threads", "1,0",
                       "--runs", "5", "--min-seconds", "0", "--op-time", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    res = read_device_results(out)
    # --op-time: the int8 artifact only, and LiteRT's Python API has no op profiler: said, not estimated
    assert res["op_time"] == {"tflite_int8": {"measured": False, "engine": "tflite", "reason": NOT_MEASURED["tflite"]}}
    assert f"tflite_int8 per-op time: NOT MEASURED: {NOT_MEASURED['tflite']}" in done.stdout
    rows = res["rows"]
    assert [(r["artifact"], r["threads"]) for r in rows] == [("tflite_int8", 1), ("tflite_int8", 0), ("tflite_fp32", 1), ("tflite_fp32", 0)]
    for r in rows:
        assert r["error"] is None and r["where"] == "device" and r["device"] == "venv-board"
        assert r["accuracy"] == r["host_accuracy"] and r["agreement_with_host"] == 1.0  # same sample, image by image
        assert r["runs"] >= 5 and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["max"]
        assert r["init_ms"] > 0 and r["first_ms"] > 0 and r["engine"].startswith("tflite ")
        prec = r["latency_precision"]  # the host's rule (precision_pct 3 from the bundle), by the same function
        assert prec["target_pct"] == 3.0 and prec["stopped_by"] in ("precision", "max_seconds") and r["measured_s"] < 1.5
        _validator("LatencyRow").validate(r)
    assert rows[0]["deploy"] and not rows[2]["deploy"]
    _validator("Machine").validate(res["device"])
    assert "torch" not in res["device"]["runtimes"] and res["device"]["runtimes"]["ai-edge-litert"] == "2.1.0"
    assert res["bundle"]["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert res["settings"]["threads"] == [1, 0] and res["settings"]["min_runs"] == 5 and res["settings"]["precision_pct"] == 3.0


def test_runner_settings_keep_an_old_bundles_fixed_rule_and_take_the_command_lines():
    from pipeline.device.runner import _settings

    old = _settings({"warmup": 10, "min_runs": 50, "min_seconds": 1.0, "threads": [1]}, None, None, None, None)
    assert old["precision_pct"] is None and old["min_seconds"] == 1.0  # measured as the host measured it then
    new = _settings({"warmup": 10, "min_runs": 25, "min_seconds": 0.0, "precision_pct": 3.0, "max_seconds": 1.0, "threads": [1]},
                    [0], None, None, None, precision_pct=0, max_seconds=2.0)
    assert new["precision_pct"] is None and new["max_seconds"] == 2.0 and new["threads"] == [0]  # --precision-pct 0: off
    with pytest.raises(PipelineError, match="max.seconds"):
        _settings({"warmup": 1, "min_runs": 5, "min_seconds": 0.0, "threads": [1]}, None, None, None, None, max_seconds=-1)


def test_device_rows_merge_beside_host_rows_in_all_three_formats(tiny_run, device_venv, bundle, tmp_path):
    from pipeline.report.cli import report_command

    results = []
    for name in ("pi4", "coral-host"):
        out = tmp_path / f"{name}.json"
        done = _run_device(device_venv, "run", bundle, "-o", out, "--name", name, "--runs", "3", "--min-seconds", "0",
                           "--only", "tflite_int8", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        results.append(out)
    assert report_command(tiny_run, device_results=results) == 0
    report = read_json(tiny_run / "report.json")
    validate_report(report)
    assert sorted(d["name"] for d in report["environment"]["devices"]) == ["coral-host", "pi4"]
    where = {(r["where"], r["device"], r["artifact"]) for r in report["latency"]}
    host = report["environment"]["host"]["name"]
    assert {("host", host, "tflite_int8"), ("device", "pi4", "tflite_int8"), ("device", "coral-host", "tflite_int8")} <= where
    for fmt in ("report.md", "report.html"):
        text = (tiny_run / fmt).read_text()
        assert "pi4" in text and "coral-host" in text, fmt
    top = "\n".join((tiny_run / "report.md").read_text().splitlines()[:8])  # real stage records: what was not measured
    assert "No Edge TPU was measured: every latency in this report is the host CPU's" in top and "or the CPU of coral-host, pi4" in top
    assert "The edgetpu_compiler (the vendor compiler) did not run: not compiled: edgetpu_compiler not found" in top
    checks = {(c["kind"], c["subject"]): c["status"] for c in report["checks"]}
    assert checks["export fidelity", "tflite_int8"] in ("PASS", "FAIL") and checks["op check", "tflite_int8"] == "PASS"
    assert checks["compiler", "edgetpu_compiler"] == "NOT RUN" and checks["device run", "tflite_int8 on pi4 (threads=1)"] == "PASS"
    assert sorted(p.name for p in (tiny_run / "device").glob("*.json")) == ["coral-host.json", "pi4.json"]  # kept for re-runs


def test_cli_bundle_and_a_compiled_edgetpu_model_without_libedgetpu(tiny_run, device_venv, tmp_path):
    """The compiled model joins the bundle; with no delegate its rows fail in one line and the CPU rows still run."""
    from pipeline.__main__ import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("02_teacher", "03_distill", "cache"))
    (run / "06_target").mkdir(exist_ok=True)
    shutil.copy(run / "05_export" / "student_int8.tflite", run / "06_target" / "student_int8_edgetpu.tflite")
    assert main(["bundle", str(run), "--target", TARGET, "-o", str(tmp_path / "e.tar")]) == 0
    out = tmp_path / "r.json"
    done = _run_device(device_venv, "run", tmp_path / "e.tar", "-o", out, "--runs", "3", "--min-seconds", "0", cwd=tmp_path)
    assert done.returncode == 1  # results written, one artifact failed
    rows = {r["artifact"]: r for r in read_json(out)["rows"]}
    edgetpu = rows["tflite_edgetpu"]
    assert edgetpu["deploy"] and edgetpu["delegate"]["library"] == "libedgetpu.so.1" and not edgetpu["delegate"]["loaded"]
    assert edgetpu["error"].startswith("Edge TPU delegate libedgetpu.so.1: failed to load") and "\n" not in edgetpu["error"]
    assert rows["tflite_int8"]["error"] is None and rows["tflite_int8"]["accuracy"] == rows["tflite_edgetpu"].get("host_accuracy")
    assert main(["bundle", str(run), "--target", "no_such_target", "-o", str(tmp_path / "x.tar")]) == 2


def test_tampered_bundle_is_refused_in_one_line_by_the_venv_runner(device_venv, bundle, tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bundle) as tin, tarfile.open(bad, "w") as tout:
        for info in tin:
            data = tin.extractfile(info).read()
            if info.name == "models/student_int8.tflite":
                data = data[:-8] + b"\x00" * 8
            tout.addfile(info, io.BytesIO(data))
    done = _run_device(device_venv, "run", bad, "-o", tmp_path / "r.json", cwd=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "r.json").exists()
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: sha256 mismatch for models/student_int8.tflite (bundle modified or corrupted); "
        "rebuild it with python -m pipeline bundle"]


def test_importing_and_running_the_device_side_loads_no_torch_or_toolchain(bundle, tmp_path):
    """In the full environment too (torch installed): nothing on the board path may import it."""
    code = (
        "import sys, pipeline.device, pipeline.device.pack, pipeline.machine, pipeline.device.delegate, "
        "pipeline.device.runner, pipeline.device.merge, pipeline.device.remote, pipeline.device.__main__\n"
        "heavy = ('torch', 'tensorflow', 'onnx2tf', 'openvino', 'onnxruntime', 'ai_edge_litert', 'pydantic', 'rich')\n"
        "print('import', [m for m in heavy if m in sys.modules])\n"
        "from pipeline.device.runner import run_bundle\n"
        f"run_bundle({str(bundle)!r}, threads=[1], runs=2, warmup=0, min_seconds=0, log=lambda s: None)\n"
        "print('run', [m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["import []", "run ['ai_edge_litert']"]


def test_results_file_mistakes_are_one_line_errors(tmp_path):
    from report_fakes import device_results

    for text, message in (("{", "not valid JSON"), ('{"kind": "benchmark-results"}', "not a device results file"),
                          ('{"kind": "device-results", "version": 9, "rows": [], "device": {}}', "version 9"),
                          (json.dumps({**device_results(), "op_time": {"tflite_int8": {"measured": False, "ms": 3}}}),
                           "op_time.tflite_int8.ms: Extra inputs are not permitted")):
        (tmp_path / "r.json").write_text(text)
        with pytest.raises(PipelineError, match=message):
            read_device_results(tmp_path / "r.json")
    with pytest.raises(PipelineError, match="no such device results file"):
        read_device_results(tmp_path / "absent.json")


def test_openvino_target_bundle_runs_through_the_openvino_runtime(tiny_run, tmp_path, monkeypatch):
    """Where OpenVINO is installed the runner takes IRs too (in-process here: the venv has LiteRT only)."""
    from pipeline.device.runner import run_bundle
    from pipeline.target import TARGETS
    from pipeline.target.rules import TargetRules

    rules = TARGETS.get("openvino_cpu") or TargetRules(
        name="openvino_cpu", description="OpenVINO CPU", deploy_artifact="openvino_fp32", device="CPU")
    monkeypatch.setitem(TARGETS, "openvino_cpu", rules)
    path = make_bundle(tiny_run, "openvino_cpu", tmp_path / "ov.tar")
    res = run_bundle(path, threads=[1], runs=3, warmup=0, min_seconds=0, name="ov-box", log=lambda s: None)
    (row,) = [r for r in res["rows"] if r["artifact"] == "openvino_fp32"]
    assert row["error"] is None and row["engine"].startswith("openvino")
    assert row["accuracy"] == row["host_accuracy"] and row["agreement_with_host"] == 1.0
    assert row["size_bytes"] > (tiny_run / "05_export" / "openvino_fp32" / "student.xml").stat().st_size  # .bin counted
    _validator("LatencyRow").validate(row)
