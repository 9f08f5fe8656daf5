"""`python -m pipeline export MODEL` and `python -m pipeline benchmark ARTIFACT…`: a model the user already
has goes through export → target → benchmark → report as the student, with no teacher and no
training, in a run folder of its own; given artifacts are measured the same way.

One module-scoped export runs the real converters once (a resnet8 trained for a moment, saved as a plain
state_dict, exported for the Edge TPU: onnx2tf int8 and NNCF int8, on 8×8 digits); the other tests
reuse its folder or stay on the ONNX/OpenVINO path (no onnx2tf).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import trained_resnet8
from pipeline.__main__ import main
from pipeline.models.checkpoint import load_checkpoint

RECIPE = """
name: mine
data:
  dataset: digits
  image_size: 8
  max_train: 64
  max_test: 40
  calibration_size: 16
  batch_size: 32
student:
  arch: resnet20   # the recipe's own student: not the given model's architecture
export:
  formats: {formats}
target:
  name: {target}
  compiler: "off"
benchmark:
  threads: [1]
  warmup: 1
  min_runs: 3
  min_seconds: 0
  gates:
    max_drop_vs_teacher: 5.0
    max_drop_vs_distilled_fp32: 5.0
    max_conversion_drop: 100.0
    min_speedup_vs_teacher: 1.0
"""
TEACHER_GATES = ("max_drop_vs_teacher", "min_speedup_vs_teacher", "max_drop_vs_distilled_fp32")


def _recipe(folder: Path, target: str = "edge_tpu", formats: str = "[onnx, tflite_int8, openvino_int8]") -> Path:
    path = folder / f"{target}.yaml"
    path.write_text(RECIPE.format(target=target, formats=formats) + f"runs_dir: {folder / 'runs'}\n")
    return path


def _state_dict(path: Path) -> torch.nn.Module:
    """resnet8 trained two epochs on digits (normalised by their own statistics, as the data stage does), saved
    as a plain state_dict: int8 of an untrained net would miss the export's fidelity check."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images[:, None].astype("float32") / 16.0)
    x = (x - x.mean()) / x.std()
    model = trained_resnet8(x, torch.from_numpy(d.target), batch=64)
    torch.save(model.state_dict(), path)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`export weights.pt --arch resnet8 edge_tpu.yaml`, once."""
    folder = tmp_path_factory.mktemp("export")
    _state_dict(folder / "weights.pt")
    code = main(["export", str(folder / "weights.pt"), "--arch", "resnet8", str(_recipe(folder))])
    return {"code": code, "folder": folder, "run": folder / "runs" / "mine-export-weights"}


def test_export_writes_the_deploy_artifacts_and_a_report_with_no_teacher_trained(exported):
    run = exported["run"]
    assert exported["code"] == 0
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [
        "01_data", "03_student", "05_export", "06_target", "07_benchmark", "08_report", "cache"]
    listed = json.loads((run / "05_export" / "artifacts.json").read_text())
    assert set(listed) == {"onnx", "tflite_int8", "openvino_int8"}
    assert all((run / "05_export" / rel).is_file() for rel in listed.values())
    assert not (run / "05_export" / "teacher.onnx").exists()
    model, meta = load_checkpoint(run / "03_student" / "student.pt")  # the user's weights, as a pipeline checkpoint
    assert meta["arch"] == "resnet8" and meta["source_checkpoint"]["format"] == "state_dict"
    given = torch.load(exported["folder"] / "weights.pt")
    assert all(torch.equal(v, given[k]) for k, v in model.state_dict().items())

    report = json.loads((run / "report.json").read_text())
    assert report["run"]["command"] == "export" and report["run"]["export_source"] == "student"
    assert {r["model"] for r in report["latency"]} == {"student"} and "teacher" not in report["models"]
    assert not any(r["stage"].startswith("teacher") for r in report["accuracy"])
    gates = {g["name"]: g for g in report["gates"]}
    for name in TEACHER_GATES:
        assert gates[name]["status"] == "NOT MEASURED" and gates[name]["passed"] is None
        assert "python -m pipeline export" in gates[name]["message"]
    assert "no teacher in this run" in gates["max_drop_vs_teacher"]["message"]
    assert gates["max_conversion_drop"]["status"] == "PASS"
    assert "(student_fp32)" in gates["max_conversion_drop"]["message"]  # the given model is the fp32 reference
    assert "max_drop_vs_teacher: no teacher in this run" in " ".join(report["verdict"]["not_measured"])
    assert "no teacher in this run" in (run / "report.md").read_text()
    target = json.loads((run / "06_target" / "manifest.json").read_text())["metrics"]
    assert target["verdict"] == "fully mapped"
    per_op = json.loads((run / "07_benchmark" / "op_time.json").read_text())  # the int8 artifacts' per-op time
    assert set(per_op) == {"tflite_int8", "openvino_int8"}
    assert per_op["tflite_int8"]["measured"] is False and "no op profiler" in per_op["tflite_int8"]["reason"]
    ov = per_op["openvino_int8"]
    assert ov["measured"] and ov["ops"] and sum(r["ms"] for r in ov["ops"]) == pytest.approx(ov["total_ms"])
    bench = json.loads((run / "07_benchmark" / "manifest.json").read_text())["metrics"]
    assert bench["op_time_ms"] == {"tflite_int8": None, "openvino_int8": round(ov["total_ms"], 5)}


def test_a_replaced_model_file_reruns_the_student_stage_and_an_unchanged_one_does_not(tmp_path):
    from pipeline.config import load_config
    from pipeline.run import export_plan, run_pipeline

    _state_dict(tmp_path / "w.pt")
    overrides = {"student": {"checkpoint": str(tmp_path / "w.pt"), "arch": "resnet8"}}
    cfg = load_config(_recipe(tmp_path, target="openvino_cpu", formats="[onnx]"), overrides)
    first = run_pipeline(cfg, plan=export_plan(), until="student")["student"]
    assert run_pipeline(cfg, plan=export_plan(), until="student")["student"].started == first.started
    weights = torch.load(tmp_path / "w.pt")
    weights["fc.bias"] += 1.0
    torch.save(weights, tmp_path / "w.pt")  # same path, new content
    again = run_pipeline(cfg, plan=export_plan(), until="student")["student"]
    assert again.started > first.started
    assert again.metrics["source_checkpoint"]["sha256"] != first.metrics["source_checkpoint"]["sha256"]


def test_benchmark_command_measures_given_artifacts_with_the_same_report(exported):
    export = exported["run"] / "05_export"
    recipe = exported["folder"] / "edge_tpu.yaml"
    code = main(["benchmark", str(export / "student_int8.tflite"), str(export / "student.onnx"), str(recipe), "--set", "name=given"])
    run = exported["folder"] / "runs" / "given"
    assert code == 0
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["01_data", "05_artifacts", "06_target", "07_benchmark",
                                                                 "08_report", "cache"]
    assert json.loads((run / "05_artifacts" / "artifacts.json").read_text()) == {"onnx": "student.onnx",
                                                                                 "tflite_int8": "student_int8.tflite"}
    report = json.loads((run / "report.json").read_text())
    assert report["run"]["command"] == "benchmark"
    assert {r["artifact"] for r in report["latency"]} == {"onnx", "tflite_int8"}
    ours = {r["artifact"]: r["top1"] for r in json.loads((exported["run"] / "report.json").read_text())["accuracy"]}
    assert {r["artifact"]: r["top1"] for r in report["accuracy"]} == {k: ours[k] for k in ("onnx", "tflite_int8")}
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["max_drop_vs_teacher"]["message"].startswith(
        "max_drop_vs_teacher NOT MEASURED: no teacher in this run (python -m pipeline benchmark trains none)")
    assert "(onnx)" in gates["max_conversion_drop"]["message"]  # the given ONNX is the fp32 reference
    assert report["target"]["verdict"] == "fully mapped"  # the deploy artifact was among them: the target stage ran


@pytest.mark.parametrize("artifact", ["student.onnx", "student_int8.tflite", "openvino_int8/student.xml"])
def test_benchmark_of_each_format_alone_finishes(exported, artifact):
    """The README's own example, one artifact and nothing beside it: its parent in the accuracy chain was never
    measured, and the walk up the chain used to loop forever. In a child process with a deadline, so a regression
    fails here instead of hanging the suite."""
    import subprocess
    import sys

    export, recipe = exported["run"] / "05_export", exported["folder"] / "edge_tpu.yaml"
    name = "alone-" + artifact.split("/")[0].replace(".", "-")
    done = subprocess.run([sys.executable, "-m", "pipeline", "benchmark", str(export / artifact), str(recipe),
                           "--set", f"name={name}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((exported["folder"] / "runs" / name / "report.json").read_text())
    (row,) = report["accuracy"]
    assert row["parent"] is None and row["drop_vs_parent_pts"] is None and row["top1"] > 0.5
    assert {r["artifact"] for r in report["latency"]} == {row["artifact"]}


def test_benchmark_command_refuses_what_it_cannot_measure_in_one_line(exported, tmp_path, capsys):
    recipe = str(exported["folder"] / "edge_tpu.yaml")
    onnx = str(exported["run"] / "05_export" / "student.onnx")
    (tmp_path / "model.pt").write_bytes(b"x")
    cases = [
        ([str(tmp_path / "model.pt"), recipe], "model.pt: not an artifact the benchmark can run (known: .onnx, .tflite, .xml; "
                                               "a checkpoint goes to python -m pipeline export)"),
        ([str(tmp_path / "gone.onnx"), recipe], "gone.onnx: no such file"),
        ([onnx, onnx, recipe], "are both onnx; benchmark one file per format"),
        ([onnx, recipe, "--set", "data.image_size=12", "--set", "name=wrongsize"], f"benchmark.artifacts: {onnx}: "),
    ]
    for args, expected in cases:
        assert main(["benchmark", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the stages' progress lines
        assert err.startswith("error: ") and expected in err, err


def test_export_of_an_onnx_file_fixes_its_batch_and_needs_no_pytorch(tmp_path):
    import onnx

    model = _state_dict(tmp_path / "w.pt")
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "mine.onnx"), dynamo=False, input_names=["images"],
                      output_names=["scores"], dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}})
    recipe = _recipe(tmp_path, target="openvino_cpu", formats="[onnx, openvino_int8]")
    assert main(["export", str(tmp_path / "mine.onnx"), str(recipe)]) == 0
    run = tmp_path / "runs" / "mine-export-mine"
    graph = onnx.load(str(run / "05_export" / "student.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 1, 8, 8] and graph.input[0].name == "images"
    side = json.loads((run / "05_export" / "student.onnx.json").read_text())
    assert side["given"] is True and side["input"]["name"] == "images"
    report = json.loads((run / "report.json").read_text())
    stages = {r["stage"]: r for r in report["accuracy"]}
    assert "student_fp32" not in stages
    assert stages["onnx"]["top1"] == json.loads((run / "03_student" / "manifest.json").read_text())["metrics"]["test_acc"]
    assert {g["name"]: g["status"] for g in report["gates"]} == {
        "max_drop_vs_teacher": "NOT MEASURED", "max_drop_vs_distilled_fp32": "NOT MEASURED", "max_conversion_drop": "PASS",
        "min_speedup_vs_teacher": "NOT MEASURED"}


def test_export_errors_are_one_line(tmp_path, capsys):
    recipe = str(_recipe(tmp_path, target="openvino_cpu", formats="[onnx]"))
    _state_dict(tmp_path / "w.pt")
    (tmp_path / "w.tflite").write_bytes(b"x")
    cases = [
        (["export", str(tmp_path / "nothere.pt"), recipe], "nothere.pt: no such file (a checkpoint or an .onnx file)"),
        (["export", str(tmp_path / "w.tflite"), recipe], "w.tflite: not a model file this command reads"),
        (["export", str(tmp_path / "w.pt"), recipe],  # the recipe's student.arch (resnet20) is not taken for the file's
         "a state_dict does not say which architecture it belongs to; set student.arch"),
        (["export", str(tmp_path / "w.pt"), "--arch", "timm:resnet8x", recipe], "student.arch: unknown timm model 'resnet8x'"),
        (["export", str(tmp_path / "w.pt"), "--arch", "resnet20", recipe],
         f"student.checkpoint: {tmp_path / 'w.pt'}: weights do not fit resnet20"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after any stage's progress lines
        assert err.startswith("error: ") and expected in err, err


def test_explore_takes_the_benchmark_stages_per_op_time(exported):
    """The overlay of an artifact the run profiled shows the run's own per-op time, not a new measurement."""
    from pipeline.report.explore import prepare

    run = exported["run"]
    model, overlays = prepare(run, "openvino_int8", op_time_runs=1)
    assert model.name == "student.onnx" and set(overlays) == {"sqnr", "ms"}
    (graph, data), = json.loads(overlays["ms"].read_text()).items()
    profiled = json.loads((run / "07_benchmark" / "op_time.json").read_text())["openvino_int8"]
    assert sum(v["value"] for v in data["results"].values()) == pytest.approx(profiled["total_ms"], rel=1e-3)


def test_report_says_where_accuracy_and_time_go_per_int8_artifact(exported):
    """The real run's table: OpenVINO int8's profiled engine nodes joined to its layers, worst SQNR first; LiteRT's why-not."""
    run = exported["run"]
    where = json.loads((run / "report.json").read_text())["where"]
    assert set(where) == {"tflite_int8", "openvino_int8"}
    ov = where["openvino_int8"]
    profiled = json.loads((run / "07_benchmark" / "op_time.json").read_text())["openvino_int8"]
    assert (ov["time_where"], ov["total_ms"]) == ("host", round(profiled["total_ms"], 5)) and ov["time_missing"] is None
    rows = ov["rows"]
    sqnr = [r["sqnr_db"] for r in rows if r["sqnr_db"] is not None]
    assert sqnr == sorted(sqnr) and len(sqnr) >= 10 and all(r["sqnr_db"] is None for r in rows[len(sqnr):])
    timed = [r for r in rows[len(sqnr):] if r["ms"] is not None]
    assert [r["ms"] for r in timed] == sorted((r["ms"] for r in timed), reverse=True)  # time-only nodes, slowest first
    joined = [r for r in rows if r["sqnr_db"] is not None and r["ms"] is not None]
    assert any("/Conv" in r["node"] and any(n.startswith(r["node"]) for n in r["engine_nodes"]) for r in joined)
    engine = sorted(n for r in rows for n in r["engine_nodes"])
    assert engine == sorted(op["node"] for op in profiled["ops"])  # every profiled node in exactly one row
    assert sum(r["ms"] or 0 for r in rows) == pytest.approx(profiled["total_ms"], abs=1e-4)
    assert 0.99 < sum(r["time_share"] or 0 for r in rows) <= 1.0 + 1e-9
    assert {r["kept_float"] for r in rows} == {False}  # accuracy control ran and kept nothing in float
    tfl = where["tflite_int8"]
    assert tfl["rows"] and all(r["ms"] is None for r in tfl["rows"]) and "no op profiler" in tfl["time_missing"]
    md = (run / "report.md").read_text()
    assert "## Where accuracy and time go" in md and f"ms, share of time: NOT MEASURED: {tfl['time_missing']}" in md


def test_a_boards_per_op_time_is_merged_into_the_table_and_named(exported, tmp_path):
    """``pipeline.device run --op-time`` on an OpenVINO bundle (in-process: this machine is the board), merged back."""
    import shutil

    from pipeline.device.bundle import make_bundle
    from pipeline.device.merge import merge_into_report
    from pipeline.device.runner import run_bundle

    run = tmp_path / "run"
    shutil.copytree(exported["run"], run, ignore=shutil.ignore_patterns("cache"))
    res = run_bundle(make_bundle(run, "openvino_cpu", tmp_path / "ov.tar"), threads=[1], runs=3, warmup=0, min_seconds=0,
                     name="ov-board", op_time=True, log=lambda s: None)
    assert set(res["op_time"]) == {"openvino_int8"} and res["op_time"]["openvino_int8"]["runs"] == 50  # fp32/fp16: not profiled
    (tmp_path / "ov-board.json").write_text(json.dumps(res))
    merge_into_report(run, [tmp_path / "ov-board.json"])
    ov = json.loads((run / "report.json").read_text())["where"]["openvino_int8"]
    board = res["op_time"]["openvino_int8"]
    assert (ov["time_where"], ov["time_machine"], ov["total_ms"]) == ("device", "ov-board", round(board["total_ms"], 5))
    assert sorted(n for r in ov["rows"] for n in r["engine_nodes"]) == sorted(op["node"] for op in board["ops"])
    assert "measured on the device ov-board" in (run / "report.md").read_text()
