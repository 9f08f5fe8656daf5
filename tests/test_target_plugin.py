"""A target is a plug-in: a fake NPU with its own vendor compiler, added at test time as a user would add one
(its module, one registry line, a recipe), goes through the target stage, the report, the bundle, the board's
delegate loader and the remote command without a change anywhere else."""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile

import numpy as np
import pytest
from report_fakes import export_metrics, make_results

import pipeline.device.bundle as bundle_mod
from pipeline.artifacts import Manifest, atomic_write_json
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.run import StageContext
from pipeline.target import TARGETS

# pipeline/target/fake_npu.py, as its author would write it
MODULE = '''"""Fake NPU: full-integer int8 TFLite compiled by the vendor's npuc, run on the board through libfakenpu."""

from pathlib import Path

from pipeline.target.rules import CompileResult, Delegate, TargetRules, VendorCompiler


def check(path, rules):
    return {"checker": "fake_npu", "verdict": "ready", "passed": True, "summary": "ready: 8 ops, all on the NPU",
            "ops_total": 8, "ops_mapped": 8, "ops_cpu": 0}


def compile_npu(model, out_dir):
    compiled = Path(out_dir) / f"{Path(model).stem}_npu.tflite"
    compiled.write_bytes(Path(model).read_bytes())
    (Path(out_dir) / "npuc.log").write_text("npuc 2.1: 7 of 8 ops on the NPU")
    return CompileResult(status="compiled", compiled=True, model=compiled.name, log="npuc.log", version="2.1",
                         ops_total=8, ops_mapped=7, ops_cpu=1, subgraphs=1, on_chip_bytes_used=2**20, off_chip_bytes=0)


RULES = TargetRules(
    name="fake_npu",
    description="Fake NPU: int8 TFLite compiled by npuc",
    io_dtype="int8",
    deploy_artifact="tflite_int8",
    accelerator="Fake NPU",
    checker=check,
    compiler=VendorCompiler(name="npuc", compile=compile_npu, output_format="tflite_npu", output_glob="*_npu.tflite"),
    image="vendor/fake-npu",
    docker_devices=("/dev/fake_npu0",),
    delegate=Delegate(accelerator="Fake NPU", library={"Linux": "libfakenpu.so.1"}, installed_glob="libfakenpu.so*",
                      not_installed_hint="libfakenpu is not installed", not_loaded_hint="no Fake NPU visible"),
)
'''
REGISTRY_LINE = "the module in TARGETS' tuple in pipeline/target/__init__.py"
RECIPE = """name: fake_npu
export:
  formats: [onnx, tflite_fp32, tflite_int8]
target:
  name: fake_npu
"""


@pytest.fixture
def fake_npu(tmp_path, monkeypatch):
    """The three things a new target needs, and nothing else: returns (rules, recipe path, files touched)."""
    module_file = tmp_path / "fake_npu.py"
    module_file.write_text(MODULE)
    spec = importlib.util.spec_from_file_location("pipeline.target.fake_npu", module_file)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    monkeypatch.setitem(TARGETS, module.RULES.name, module.RULES)  # the registry line
    recipe = tmp_path / "fake_npu.yaml"
    recipe.write_text(RECIPE)
    return module.RULES, recipe, [module_file, REGISTRY_LINE, recipe]


@pytest.fixture
def target_stage(fake_npu, tmp_path, capsys):
    """The target stage of a run of the fake target's recipe: (run folder, its metrics, what it printed)."""
    from pipeline.target.stage import run

    rules, recipe, _ = fake_npu
    run_dir = tmp_path / "run"
    export, out = run_dir / "05_export", run_dir / "06_target"
    export.mkdir(parents=True)
    out.mkdir()
    (export / "student_int8.tflite").write_bytes(b"TFL3 int8 stand-in")
    (export / "student_int8.tflite.json").write_text(json.dumps({"format": "tflite_int8", "input": {"dtype": "int8"}}))
    atomic_write_json(export / "artifacts.json", {"tflite_int8": "student_int8.tflite"})
    cfg = load_config(recipe, {"runs_dir": str(tmp_path)})
    metrics = run(StageContext(cfg=cfg, out=out, inputs={"export": export}, cache=tmp_path / "cache")).manifest_dict()
    Manifest(stage="target", cache_key="k", inputs={}, metrics=metrics).write(out)
    return run_dir, metrics, capsys.readouterr().err


def test_a_new_target_is_three_files(fake_npu):
    rules, recipe, touched = fake_npu
    assert len(touched) == 3
    assert load_config(recipe).target.name == "fake_npu" and rules.runtime == "tflite"  # derived from tflite_int8's row


def test_the_vendor_compiler_result_reaches_check_json_metrics_and_console(target_stage):
    run_dir, metrics, printed = target_stage
    assert json.loads((run_dir / "06_target" / "check.json").read_text())["checker"] == "fake_npu"
    assert (run_dir / "06_target" / "student_int8_npu.tflite").is_file()
    assert metrics["compiler"] == "compiled" and metrics["compiled"] is True
    assert metrics["compiler_result"]["ops_mapped"] == 7 and metrics["compiler_result"]["log"] == "npuc.log"
    assert metrics["compiler_agrees"] is False  # the check said 8/8, the compiler 7/8
    assert "npuc: compiled student_int8_npu.tflite: 7/8 ops on the Fake NPU, 1 subgraph(s), 1.00 MiB on-chip" in printed


def test_the_report_names_the_compiler_and_the_accelerator(target_stage, tmp_path):
    from pipeline.report.build import RunRecords, build_report
    from pipeline.report.write import write_report

    run_dir, metrics, _ = target_stage
    results = make_results()
    results["run"]["target"] = "fake_npu"
    report = build_report(results, records=RunRecords(folder=str(run_dir), export=export_metrics(), target=metrics))
    compiler = report["target"]["compiler"]
    assert (compiler["name"], compiler["ops_mapped"], compiler["ops_total"], compiler["on_chip_bytes_used"]) == ("npuc", 7, 8, 2**20)
    assert report["target"]["accelerator"] == "Fake NPU" and report["target"]["checker"] == "fake_npu"
    assert any(line.startswith("No Fake NPU was measured") for line in report["verdict"]["not_measured"])
    write_report(report, tmp_path, ["md"])
    assert "npuc 2.1 compiled it: 7/8 ops on the Fake NPU, 1 on the CPU, 1 subgraph(s)" in (tmp_path / "report.md").read_text()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # LiteRT's half-made Delegate.__del__
def test_the_bundle_carries_the_compiled_model_and_the_board_loads_its_delegate_by_name(target_stage, tmp_path, monkeypatch):
    from pipeline.device.delegate import delegate_info, load_delegate
    from pipeline.device.remote import RemoteSpec, default_image, remote_run_command

    run_dir, _, _ = target_stage
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.arange(4) % 3
    monkeypatch.setattr(bundle_mod, "test_sample", lambda run_dir, n: (x[:n], y[:n]))
    monkeypatch.setattr(bundle_mod, "host_predictions", lambda path, xs: np.zeros(len(xs), np.int64))
    path = bundle_mod.make_bundle(run_dir, "fake_npu", tmp_path / "npu.tar")
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("bundle.json"))
    assert list(manifest["artifacts"]) == ["tflite_npu", "tflite_int8"] and manifest["deploy_artifact"] == "tflite_npu"
    npu = manifest["artifacts"]["tflite_npu"]
    assert npu["host"]["reference"] == "tflite_int8" and npu["delegate"]["library"] == {"Linux": "libfakenpu.so.1"}

    info = delegate_info(npu["delegate"])
    with pytest.raises(PipelineError, match=r"^Fake NPU delegate libfakenpu.so.1: failed to load \(.*\); libfakenpu is not installed$"):
        load_delegate(npu["delegate"], info)
    assert info["loaded"] is False

    command = remote_run_command(RemoteSpec(ssh="pi@board", target="fake_npu", image=default_image("fake_npu"), name="board"))
    assert ["--device", "/dev/fake_npu0"] == command[command.index("--device"):command.index("--device") + 2]
    assert "vendor/fake-npu:0.1.0" in command
