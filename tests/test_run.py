"""Stage caching, resume after an interrupted stage, and the CLI end to end on a tiny recipe."""

import json
import subprocess
import sys

import pytest

from pipeline.__main__ import main
from pipeline.artifacts import Manifest
from pipeline.config import load_config
from pipeline.run import run_pipeline, stage_dir


def test_second_run_hits_the_cache_and_a_change_reruns_only_downstream(tiny_recipe, capsys):
    cfg = load_config(tiny_recipe)
    first = run_pipeline(cfg, until="distill")
    assert first["teacher"].metrics["test_acc"] > 0.4  # four epochs on 300 digits: well above chance (0.1)
    second = run_pipeline(cfg, until="distill")
    assert {k: m.started for k, m in second.items()} == {k: m.started for k, m in first.items()}

    changed = load_config(tiny_recipe, {"distill.method": "at"})
    third = run_pipeline(changed, until="distill")
    assert third["teacher"].started == first["teacher"].started  # teacher reused
    assert third["distill"].started > first["distill"].started and third["distill"].metrics["method"] == "at"


def test_killed_stage_is_rerun_never_taken_as_done(tiny_recipe, monkeypatch):
    cfg = load_config(tiny_recipe)
    run_pipeline(cfg, until="data")
    import pipeline.teacher.stage as teacher_stage

    def boom(ctx):
        (ctx.out / "teacher.pt").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(teacher_stage, "run", boom)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, until="teacher")
    assert not stage_dir(cfg, "teacher").exists()
    assert stage_dir(cfg, "teacher").with_name("02_teacher.partial").exists()
    monkeypatch.undo()
    done = run_pipeline(cfg, until="teacher")
    assert stage_dir(cfg, "teacher").is_dir() and not stage_dir(cfg, "teacher").with_name("02_teacher.partial").exists()
    assert Manifest.read(stage_dir(cfg, "teacher")).cache_key == done["teacher"].cache_key


def test_tampered_output_is_recomputed(tiny_recipe):
    cfg = load_config(tiny_recipe)
    first = run_pipeline(cfg, until="data")
    (stage_dir(cfg, "data") / "calibration.npy").write_bytes(b"tampered")
    second = run_pipeline(cfg, until="data")
    assert second["data"].started > first["data"].started


def test_fresh_and_from_force_reruns(tiny_recipe):
    cfg = load_config(tiny_recipe)
    first = run_pipeline(cfg, until="data")
    again = run_pipeline(cfg, until="data", fresh=True)
    assert again["data"].started > first["data"].started


def test_manifest_records_key_inputs_outputs_and_tools(tiny_recipe):
    cfg = load_config(tiny_recipe)
    run_pipeline(cfg, until="teacher")
    m = json.loads((stage_dir(cfg, "teacher") / "manifest.json").read_text())
    assert len(m["cache_key"]) == 64 and set(m["inputs"]) == {"data"}
    assert set(m["outputs"]) == {"teacher.pt"} and len(m["outputs"]["teacher.pt"]) == 64
    assert "torch" in m["tools"] and m["metrics"]["params"] > 0


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  method: rtkk\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: bad.yaml: distill.method: unknown 'rtkk' (known: " + err.split("(known: ")[1]
    assert main(["run", str(bad), "--set", "nokey"]) == 2
    assert main(["run", "edge_tpu.yaml", "--until", "nowhere"]) == 2
    assert "--until: unknown stage 'nowhere'" in capsys.readouterr().err


def test_corrupt_teacher_checkpoint_is_one_line(tiny_recipe, tmp_path, capsys):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["run", str(tiny_recipe), "--until", "teacher", "--set", f"teacher.checkpoint={bad}"]) == 2
    assert "teacher.pt: not a readable checkpoint" in capsys.readouterr().err


def test_cli_end_to_end_in_a_subprocess(tiny_recipe):
    """As a user runs it: from the recipe's folder, with a relative runs_dir (the default is "runs"), through the
    precheck, whose converters run in work folders of their own."""
    cmd = [sys.executable, "-m", "pipeline", "run", tiny_recipe.name, "--until", "qat", "--set", "runs_dir=runs",
           "--set", "target.check_before_training=true"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tiny_recipe.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tiny_recipe.parent / "runs" / "tiny" / "04_qat" / "manifest.json").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tiny_recipe.parent)
    assert again.returncode == 0 and again.stderr.count("✓") >= 4 and "▶" not in again.stderr, again.stderr[-2000:]


def test_missing_host_toolchain_is_one_line_naming_the_extra(monkeypatch, capsys):
    import pipeline.__main__ as cli

    def no_torch(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setitem(cli.COMMANDS, "check", no_torch)
    assert main(["check", "edge_tpu.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch is not installed" in err[0] and "edge-pipeline[host]" in err[0]


def test_base_install_and_device_extra_pull_no_host_toolchain():
    """A board installs the base package + [device]: the declared metadata must not drag torch or TensorFlow in."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    board = [*project["dependencies"], *project["optional-dependencies"]["device"]]
    names = {d.split("=")[0].split(">")[0].split("<")[0].strip().lower() for d in board}
    assert names == {"numpy", "ai-edge-litert"}
    host = {d.split("==")[0].lower() for d in project["optional-dependencies"]["host"]}
    assert {"torch", "tensorflow", "onnx2tf", "openvino", "nncf"} <= host
    assert all("==" in d for d in project["optional-dependencies"]["host"])  # pinned: an unpinned install drifts


def test_the_precheck_runs_beside_the_teacher_and_its_refusal_stops_training_at_the_next_epoch(tiny_recipe, monkeypatch):
    """The untrained student's check overlaps the first training stage; a refusal ends that stage at an epoch end,
    with the check's own one-line error, and nothing after it runs."""
    import threading

    import pipeline.run as run_module
    from pipeline.errors import PipelineError

    cfg = load_config(tiny_recipe, {"target.check_before_training": True, "teacher.epochs": 6})
    verdict_given, epochs = threading.Event(), []

    def refuse(cfg):
        assert threading.current_thread().name == "precheck"  # beside the run, not before it
        verdict_given.set()
        raise PipelineError("precheck: student 'resnet8' cannot run fully on target edge_tpu (test)")

    monkeypatch.setattr(run_module, "_precheck", refuse)
    import pipeline.train.loop as loop

    real_fit = loop.fit

    def counting_fit(*args, on_epoch_end=None, **kwargs):
        def seen(row):
            verdict_given.wait(5)  # the refusal is in before the first epoch ends
            epochs.append(row["epoch"])
            if on_epoch_end is not None:
                on_epoch_end(row)
        return real_fit(*args, on_epoch_end=seen, **kwargs)

    monkeypatch.setattr("pipeline.teacher.stage.fit", counting_fit)
    with pytest.raises(PipelineError, match="cannot run fully on target edge_tpu"):
        run_pipeline(cfg, until="distill")
    assert len(epochs) == 1  # stopped at the first epoch end, not after six
    assert not stage_dir(cfg, "teacher").exists() and not stage_dir(cfg, "distill").exists()


def test_a_passing_precheck_is_waited_for_before_the_student_trains(tiny_recipe, monkeypatch):
    import time

    import pipeline.run as run_module

    cfg = load_config(tiny_recipe, {"target.check_before_training": True})
    checked = []
    monkeypatch.setattr(run_module, "_precheck", lambda cfg: (time.sleep(0.5), checked.append(time.time())))
    done = run_pipeline(cfg, until="distill")
    assert len(checked) == 1  # once: started beside the teacher, not again beside distill
    assert done["teacher"].started < checked[0] < done["distill"].started
