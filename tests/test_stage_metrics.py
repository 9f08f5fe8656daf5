"""Typed stage results: a stage's metrics round-trip through its model unchanged, a closed model refuses a key it does
not name, and the command a stage runs under is the one its context says (never guessed from the folders it gets)."""

import json

import pytest
from pydantic import ValidationError

from pipeline.artifacts import Manifest, atomic_write_json
from pipeline.config import load_config
from pipeline.run import StageContext, run_pipeline, stage_dir
from pipeline.stage_metrics import DataMetrics, ExportMetrics, ReportMetrics, TargetMetrics, manifest_metrics
from pipeline.stages import ARTIFACTS_FILE, STUDENT_CHECKPOINT
from report_fakes import export_metrics, target_metrics


def test_the_data_stage_metrics_round_trip_through_its_manifest(tiny_recipe):
    cfg = load_config(tiny_recipe)
    written = run_pipeline(cfg, until="data")["data"]
    on_disk = json.loads((stage_dir(cfg, "data") / "manifest.json").read_text())["metrics"]
    typed = DataMetrics.of(Manifest.read(stage_dir(cfg, "data")).metrics)
    assert typed.train > 0 and typed.test > 0 and typed.input_shape == [1, 8, 8]
    assert typed.manifest_dict() == on_disk == written.metrics
    assert list(typed.manifest_dict()) == list(on_disk)  # key order too: the run loop prints the first four


def test_an_open_model_keeps_the_keys_it_does_not_name_in_their_order():
    recorded = target_metrics()
    typed = TargetMetrics.of(recorded)
    assert typed.passed is True and typed.check["checker"] == "edgetpu_static"
    assert typed.model_extra == {"ops_total": 10, "ops_mapped": 10, "ops_cpu": 0, "fits_on_chip": True}
    assert list(typed.manifest_dict()) == list(recorded) and typed.manifest_dict() == recorded
    export = ExportMetrics.of(export_metrics({"onnx": "too far from PyTorch"}))
    assert export.fidelity["onnx"].passed is False and export.fidelity["tflite_int8"].op_check.io_dtype == "uint8"


def test_a_stage_returning_a_key_its_closed_model_lacks_fails_the_run(tiny_recipe, monkeypatch):
    import pipeline.data.stage as data_stage

    real = data_stage.run
    monkeypatch.setattr(data_stage, "run", lambda ctx: {**real(ctx).manifest_dict(), "surprise": 1})
    with pytest.raises(ValidationError, match="surprise"):
        run_pipeline(load_config(tiny_recipe), until="data")
    with pytest.raises(ValidationError):
        manifest_metrics("report", {"verdict": "PASS", "gates_failed": "two"})  # a named key of the wrong type too
    with pytest.raises(TypeError, match="ReportMetrics"):
        manifest_metrics("report", DataMetrics(train=1))  # another stage's model


def test_an_older_manifest_without_some_keys_reads_as_not_recorded():
    assert ReportMetrics.of({"verdict": "FAIL"}).failures == [] and ReportMetrics.of(None).verdict is None
    assert ExportMetrics.of({}).source is None and TargetMetrics.of({}).compiler_result is None


@pytest.mark.parametrize("command, scored", [("run", True), ("export", False)])
def test_the_benchmark_reads_the_command_from_its_context(tmp_path, tiny_recipe, command, scored):
    """The same folders (a teacher among them) under two commands: only a run scores a missing distilled checkpoint."""
    from pipeline.benchmark.subjects import collect_subjects

    export, distill, teacher = tmp_path / "05_export", tmp_path / "03_distill", tmp_path / "02_teacher"
    for folder in (export, distill, teacher):
        folder.mkdir()
    atomic_write_json(export / ARTIFACTS_FILE, {"onnx": "student.onnx"})
    (export / "student.onnx").write_bytes(b"")
    cfg = load_config(tiny_recipe, {"export.formats": ["onnx"]})
    ctx = StageContext(cfg=cfg, out=tmp_path / "out", inputs={"export": export, "distill": distill, "teacher": teacher},
                       cache=tmp_path, command=command)
    subjects, errors = collect_subjects(ctx)
    assert not (distill / STUDENT_CHECKPOINT).exists() and not errors
    assert any(s.stage == "student_fp32" for s in subjects) is scored
