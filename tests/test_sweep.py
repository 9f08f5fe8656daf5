"""`python -m pipeline sweep`: a student search on Optuna, each trial an ordinary run, shared stages computed once.

The end-to-end sweeps run real trials on digits at 8×8 with one-epoch budgets (OpenVINO int8 as the deploy
artifact: the quickest converter); the engine tests (two workers, a killed worker, PostgreSQL) train nothing
(teacher 0 epochs) so that a trial costs seconds. The PostgreSQL test starts a throw-away server from Debian's
`postgresql` package on a loopback port and skips only where that package is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main

BASE = {
    "data": {"dataset": "digits", "image_size": 8, "max_train": 300, "max_test": 120, "calibration_size": 16, "batch_size": 64},
    "teacher": {"arch": "resnet14", "epochs": 1},
    "distill": {"epochs": 1, "seeds": [0]},
    "qat": {"enabled": False},
    "export": {"formats": ["onnx", "openvino_int8"], "layer_error_images": 0, "openvino_accuracy_control": "off"},
    "target": {"name": "openvino_cpu"},
    "benchmark": {"warmup": 1, "min_runs": 5, "min_seconds": 0},
}


def _sweep(folder: Path, name: str, *, base=None, space=None, **more) -> Path:
    spec = {"name": name, "base": base or BASE, "space": space or {"student.arch": {"choice": ["resnet8", "resnet14", "mobile_half"]}},
            "budget": {"trials": 3}, "sweeps_dir": str(folder / "sweeps"), **more}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _study(folder: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'sweeps' / name / 'study.db'}")


def _cli(*args, cwd=None, env_path=None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": env_path or os.environ["PATH"]}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three candidates, one epoch each, the default engine (SQLite in the sweep folder, the grid sampler)."""
    folder = tmp_path_factory.mktemp("sweep")
    path = _sweep(folder, "three", constraints={"max_p90_ms": 1000.0}, pruning={"enabled": False})
    code = main(["sweep", str(path)])
    return {"code": code, "folder": folder, "sweep": folder / "sweeps" / "three", "path": path}


def test_a_sweep_runs_each_candidate_as_an_ordinary_run_and_recommends_one(three):
    assert three["code"] == 0
    sweep = three["sweep"]
    summary = json.loads((sweep / "sweep.json").read_text())
    assert summary["sampler"] == "grid" and summary["counts"]["COMPLETE"] == 3
    assert sorted(r["params"]["student.arch"] for r in summary["trials"]) == ["mobile_half", "resnet14", "resnet8"]
    for r in summary["trials"]:  # each trial a run folder with its own report
        report = json.loads((sweep / "trials" / f"{r['number']:04d}" / "report.json").read_text())
        assert report["run"]["config_hash"] == r["config_hash"]
        assert 0 <= r["top1"] <= 1 and r["val_images"] > 0 and r["p90_ms"] > 0 and r["front_rank"] is not None
    best = max(summary["trials"], key=lambda r: (r["top1"], -r["p90_ms"]))
    assert summary["recommended"] == best["number"]
    assert summary["verdict"].startswith(f"recommended: trial {best['number']:04d}")
    assert "host CPU" in summary["latency_note"]  # no --device: said in the first lines
    assert summary["shared_stages"]["teacher"] == {"computed": 1, "fetched": 2}  # the teacher trained once
    assert summary["shared_stages"]["data"] == {"computed": 1, "fetched": 2}
    teacher = summary["teacher"]  # the plot's reference: timed once for the sweep (trials time their deploy artifact only)
    assert teacher["artifact"] == "onnx" and teacher["p90_ms"] > 0 and 0 <= teacher["top1"] <= 1
    for r in summary["trials"]:
        report = json.loads((sweep / "trials" / f"{r['number']:04d}" / "report.json").read_text())
        assert {(x["model"], x["artifact"]) for x in report["latency"]} == {("student", "openvino_int8")}
        assert r["top1"] == report["validation"]["top1"]
    trials = {t.number: t for t in _study(three["folder"], "three").trials}
    for r in summary["trials"]:  # the curve study's last value is the distillation's validation top-1, as its epochs were
        distill = json.loads((sweep / "trials" / f"{r['number']:04d}" / "03_distill" / "manifest.json").read_text())
        assert trials[r["number"]].user_attrs["distill_val"] == distill["metrics"]["val_acc_mean"] is not None
    md = (sweep / "sweep.md").read_text().splitlines()
    assert md[2].startswith("**recommended: trial") and "host CPU" in md[4]
    html = (sweep / "sweep.html").read_text()
    assert "data:image/png;base64," in html and 'href="trials/0000/report.html"' in html


def test_best_yaml_reproduces_the_recommended_config_hash(three):
    from pipeline.config import load_config
    from pipeline.run_folder import config_hash

    summary = json.loads((three["sweep"] / "sweep.json").read_text())
    best = next(r for r in summary["trials"] if r["number"] == summary["recommended"])
    cfg = load_config(three["sweep"] / "best.yaml")
    assert config_hash(cfg.model_dump(mode="json")) == best["config_hash"]
    assert cfg.student.arch == best["params"]["student.arch"]


def test_running_the_same_sweep_again_continues_the_study_and_runs_nothing_new(three, capsys):
    assert main(["sweep", str(three["path"])]) == 0
    assert len(_study(three["folder"], "three").trials) == 3


def test_a_changed_search_space_under_the_same_name_is_one_line(three, capsys):
    spec = yaml.safe_load(three["path"].read_text())
    spec["space"]["distill.method"] = {"choice": ["kd", "at"]}
    changed = three["folder"] / "changed.yaml"
    changed.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(changed)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "search space changed (space.distill.method)" in err


def test_under_an_impossible_latency_budget_no_trial_is_recommended(three):
    """The same trials judged against a budget none meets: every constraint term is violated, no recommendation
    (the command then exits 3: test_a_hard_swish_candidate…)."""
    from pipeline.sweep import report
    from pipeline.sweep.spec import load_sweep

    spec = load_sweep(three["path"])
    tight = spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"max_p90_ms": 1e-6})})
    rows = report.trial_rows(_study(three["folder"], "three"))
    from pipeline.sweep.trial import constraint_terms

    assert all(constraint_terms(tight, r)["max_p90_ms"] > 0 for r in rows)
    assert report.recommend([{**r, "meets_constraints": False} for r in rows]) is None


# ---------------------------------------------------------------- cheap rejection, pruning


def test_a_hard_swish_candidate_for_the_edge_tpu_is_pruned_without_training(tmp_path):
    base = {**BASE, "data": {**BASE["data"], "image_size": 32}, "target": {"name": "edge_tpu", "compiler": "off"},
            "export": {"formats": ["onnx", "tflite_int8"], "layer_error_images": 0}}
    path = _sweep(tmp_path, "hs", base=base, space={"student.arch": {"choice": ["torchvision:mobilenet_v3_small"]}},
                  budget={"trials": 1})
    assert main(["sweep", str(path)]) == 3  # nothing met the constraints: nothing finished
    (trial,) = _study(tmp_path, "hs").trials
    assert trial.state.name == "PRUNED" and trial.user_attrs["pruned_at"] == "before training"
    assert "HARD_SWISH" in trial.user_attrs["pruned"]
    run = Path(trial.user_attrs["run"])
    assert not (run / "02_teacher").exists() and not (tmp_path / "sweeps" / ".store" / "teacher").exists()
    summary = json.loads((tmp_path / "sweeps" / "hs" / "sweep.json").read_text())
    assert summary["verdict"] == "no trial met the constraints" and summary["trials"][0]["pruned"]


def test_size_and_latency_rejections_are_reasoned_from_parameters_and_macs():
    from types import SimpleNamespace

    from pipeline.config import validate_config
    from pipeline.sweep.spec import SweepSpec
    from pipeline.sweep.trial import SweepRun, reject_before_training

    class Trial(SimpleNamespace):
        def set_user_attr(self, k, v):
            self.attrs[k] = v

    done = SimpleNamespace(state=SimpleNamespace(name="COMPLETE"), number=7, user_attrs={"macs": 1_000_000, "p90_ms": 0.1})
    from optuna.trial import TrialState

    done.state = TrialState.COMPLETE
    study = SimpleNamespace(get_trials=lambda deepcopy=False: [done])
    cfg = validate_config({**BASE, "student": {"arch": "resnet14"}, "target": {"name": "openvino_cpu", "check_before_training": False}})
    spec = SweepSpec.model_validate({"name": "s", "base": BASE, "space": {"student.arch": {"choice": ["resnet14"]}},
                                     "constraints": {"max_size_mb": 0.01}})
    t = Trial(attrs={}, study=study)
    why = reject_before_training(cfg, SweepRun(spec, BASE, None, None, 1), t)
    assert why.startswith(f"its {t.attrs['params']:,} parameters take") and "max_size_mb 0.01" in why
    spec = spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"max_size_mb": None, "max_p90_ms": 0.01})})
    why = reject_before_training(cfg, SweepRun(spec, BASE, None, None, 1), t)
    predicted = t.attrs["macs"] * 0.1 / 1_000_000
    assert t.attrs["predicted_p90_ms"] == pytest.approx(predicted) and predicted > 0.015
    assert "trial 7" in why and "max_p90_ms 0.01 × margin 1.5" in why


# ---------------------------------------------------------------- the engine: workers, faults, PostgreSQL

ENGINE_BASE = {**BASE, "teacher": {"arch": "resnet8", "epochs": 0}, "distill": {"epochs": 0, "seeds": [0]},
               "target": {"name": "openvino_cpu", "check_before_training": False},
               "benchmark": {"warmup": 1, "min_runs": 3, "min_seconds": 0, "max_images": 60}, "report": {"formats": ["json"]}}
FOUR = {"student.arch": {"choice": ["resnet8", "resnet14", "mobile_half", "resnet20"]}}


def _engine_sweep(folder: Path, name: str, **more) -> Path:
    return _sweep(folder, name, base=ENGINE_BASE, space=FOUR, budget={"trials": 4}, pruning={"enabled": False},
                  heartbeat_s=1, **more)


def _assert_each_point_once(trials, n: int) -> None:
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == n and len({t.number for t in done}) == n
    assert len({t.params["student.arch"] for t in done}) == n  # no candidate ran twice
    assert len({t.user_attrs["run"] for t in done}) == n


def test_a_worker_killed_mid_trial_loses_only_that_trial_and_two_workers_complete_the_study(tmp_path):
    """One worker is SIGKILLed while a trial runs; the same command with --workers 2 then finishes the study: the
    dead trial is marked failed by the heartbeat and retried with the same candidate, the two workers share the
    rest, and no candidate runs twice."""
    import optuna

    path = _engine_sweep(tmp_path, "killed")
    worker = _cli("sweep", path, "--worker")
    storage = f"sqlite:///{tmp_path / 'sweeps' / 'killed' / 'study.db'}"
    deadline, running = time.time() + 300, None
    while time.time() < deadline and running is None:
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name="killed", storage=storage).trials
        except Exception:
            continue
        running = next((t for t in trials if t.state.name == "RUNNING" and t.number >= 1), None)
    assert running is not None, "no trial started"
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    time.sleep(3.5)  # past the grace period (3 × heartbeat_s)
    again = _cli("sweep", path, "--workers", "2")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    killed = trials[running.number]
    assert killed.state.name == "FAIL" and "error" not in killed.user_attrs  # marked failed by the heartbeat
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == killed.params
    _assert_each_point_once(trials, 4)
    resumed = {t.user_attrs["worker"] for t in trials if t.number > running.number}
    assert len(resumed) == 2  # both new workers ran trials
    summary = json.loads((tmp_path / "sweeps" / "killed" / "sweep.json").read_text())
    assert summary["shared_stages"]["teacher"]["computed"] == 1  # the killed worker's teacher was reused


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres(tmp_path):
    """A throw-away PostgreSQL server on a free loopback port, run as the `postgres` user (initdb refuses root)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql; .ci/run installs it)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install -e '.[host]')")
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="sweep-pg-"))  # in /tmp itself: pytest's folders are private to root
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for step in ([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "test"],
                 [str(bindir / "pg_ctl"), "-D", str(data), "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                  "-w", "-l", str(data / "server.log"), "start"]):
        done = subprocess.run([*as_postgres, *step], capture_output=True, text=True)
        assert done.returncode == 0, f"{step[0]}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
    try:
        yield f"postgresql+psycopg2://test@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_against_postgresql_complete_one_study(tmp_path, postgres):
    import optuna

    path = _engine_sweep(tmp_path, "pg")
    proc = _cli("sweep", path, "--workers", "2", "--storage", postgres)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    trials = optuna.load_study(study_name="pg", storage=postgres).trials
    _assert_each_point_once(trials, 4)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert not (tmp_path / "sweeps" / "pg" / "study.db").exists()  # nothing went to the default SQLite file
    assert json.loads((tmp_path / "sweeps" / "pg" / "sweep.json").read_text())["storage"] == postgres


def test_with_device_each_trial_is_measured_on_the_board_and_that_latency_is_the_objective(tmp_path):
    """--device through the real bundle → ssh/scp → board runner → merge path, with stand-ins for ssh and scp that
    run here (the board's runner, installed: --no-docker)."""
    import optuna

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text('#!/bin/bash\n# stand-in for ssh to a board: runs the command here\nshift\nexec bash -c "$1"\n')
    (bin_dir / "scp").write_text('#!/bin/bash\n# stand-in for scp: copies here, dropping host:\nshift\ncp "${1#*:}" "${2#*:}"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    path = _sweep(tmp_path, "board", base=ENGINE_BASE, space={"student.arch": {"choice": ["resnet8"]}},
                  budget={"trials": 1}, pruning={"enabled": False})
    journal = tmp_path / "journal.log"  # Optuna's journal file storage, the third kind --storage takes
    proc = _cli("sweep", path, "--device", "pi@board", "--target", "openvino_cpu", "--no-docker", "--storage", f"journal:{journal}",
                env_path=f"{bin_dir}:{os.environ['PATH']}")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    from optuna.storages.journal import JournalFileBackend

    (trial,) = optuna.load_study(study_name="board", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))).trials
    assert trial.user_attrs["latency_where"] == "device" and trial.user_attrs["latency_machine"] == "board"
    report = json.loads((Path(trial.user_attrs["run"]) / "report.json").read_text())
    row = next(r for r in report["latency"] if r["where"] == "device" and r["artifact"] == "openvino_int8")
    assert trial.values[1] == row["latency_ms"]["p90"]
    summary = json.loads((tmp_path / "sweeps" / "board" / "sweep.json").read_text())
    assert summary["latency_note"] == "latency measured on the target board (pi@board)"


# ---------------------------------------------------------------- bad sweep files


BAD = [
    ({"spaces": {}}, "unknown key"),
    ({"space": {"student.arch": {"choice": []}}}, "space.student.arch"),
    ({"space": {"data.image_size": {"int": [16, 8]}}}, "space.data.image_size: int range [16, 8] is empty"),
    ({"space": {"distill.lr": {"log": [0, 0.1]}}}, "space.distill.lr: log range [0.0, 0.1]: needs 0 < low < high"),
    ({"space": {"distill.lr": {"float": [0.1, 0.1]}}}, "space.distill.lr: float range"),
    ({"space": {"student.arch": {"choice": ["resnet8", "resnet8"]}}}, "choice lists a value twice: resnet8"),
    ({"space": {"student.arch": {"choice": ["resnet9"]}}}, "space.student.arch: resnet9: student.arch: unknown 'resnet9'"),
    ({"space": {"student.archh": {"choice": ["resnet8"]}}}, "space.student.archh: resnet8: student.archh: unknown key"),
    ({"space": {"student.arch": {"range": [1, 2]}}}, "space.student.arch: expected one of {choice"),
    ({"objectives": ["p90_ms"]}, "objectives: top1 is required"),
    ({"objectives": ["top1", "latency"]}, "objectives.1"),
    ({"constraints": {"max_p90_ms": -1}}, "constraints.max_p90_ms"),
    ({"budget": {"trials": 0}}, "budget.trials"),
    ({"sampler": "grid", "space": {"distill.lr": {"log": [0.01, 0.1]}}}, "sampler: grid needs a space of choices"),
    ({"base": {"distill": {"method": "rtkk"}}}, "base: base (inline): distill.method: unknown 'rtkk'"),
]


@pytest.mark.parametrize("change,expected", BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_sweep_file_is_one_line_naming_the_key(tmp_path, capsys, change, expected):
    spec = {"name": "bad", "base": BASE, "space": {"student.arch": {"choice": ["resnet8"]}}, "sweeps_dir": str(tmp_path), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and expected in err, err
    assert not (tmp_path / "bad").exists()  # refused before any study or folder was made


def test_an_unreachable_storage_and_bad_options_are_one_line(tmp_path, capsys):
    path = _sweep(tmp_path, "opts")
    for args, expected in [
        (["--storage", "postgresql+psycopg2://u:secret@127.0.0.1:1/db"], "--storage postgresql+psycopg2://u:***@127.0.0.1:1/db: cannot"),
        (["--workers", "0"], "--workers 0: must be ≥ 1"),
        (["--device", "pi@board"], "--device needs --target"),
        (["--target", "rpi5"], "--target rpi5: unknown"),
    ]:
        assert main(["sweep", str(path), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and expected in err and "secret" not in err, err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such sweep file here or in targets/sweeps/ (ready sweeps: edge_tpu_students.yaml)" in capsys.readouterr().err


# ---------------------------------------------------------------- pieces


def test_the_stage_store_computes_once_and_links_the_same_bytes_into_each_run(tmp_path):
    from pipeline.artifacts import Manifest, hash_outputs
    from pipeline.store import StageStore

    store = StageStore(tmp_path / "store")
    made = tmp_path / "a" / "02_teacher"
    made.mkdir(parents=True)
    (made / "teacher.pt").write_bytes(b"weights")
    Manifest(stage="teacher", cache_key="k" * 64, inputs={}, outputs=hash_outputs(made)).write(made)
    assert store.fetch("teacher", "k" * 64, tmp_path / "b" / "02_teacher", run="b") is None
    store.publish("teacher", "k" * 64, made, run="a")
    (tmp_path / "b").mkdir()
    got = store.fetch("teacher", "k" * 64, tmp_path / "b" / "02_teacher", run="b")
    assert got.cache_key == "k" * 64 and (tmp_path / "b" / "02_teacher" / "teacher.pt").read_bytes() == b"weights"
    assert os.stat(tmp_path / "b" / "02_teacher" / "teacher.pt").st_ino == os.stat(made / "teacher.pt").st_ino
    assert store.counts() == {"teacher": {"computed": 1, "fetched": 1}}
    (store.entry("teacher", "k" * 64) / "teacher.pt").unlink()  # a damaged entry is not served
    assert store.fetch("teacher", "k" * 64, tmp_path / "c" / "02_teacher", run="c") is None


def test_pareto_ranks_and_the_recommendation():
    from pipeline.sweep.report import pareto_ranks, recommend

    rows = [{"number": n, "state": "COMPLETE", "top1": a, "p90_ms": p, "size_mb": 1.0, "meets_constraints": ok}
            for n, a, p, ok in [(0, 0.9, 1.0, True), (1, 0.95, 2.0, True), (2, 0.85, 1.5, True), (3, 0.99, 9.0, False)]]
    ranks = pareto_ranks(rows, ["top1", "p90_ms"])
    assert ranks == {0: 0, 1: 0, 3: 0, 2: 1}  # 2 is beaten by 0 on both
    assert recommend(rows)["number"] == 1  # the most accurate that meets the constraints (3 does not)


def test_space_values_apply_to_the_recipe_and_grids_enumerate():
    from pipeline.sweep.spec import SweepSpec, apply, grid, grid_size

    spec = SweepSpec.model_validate({"name": "s", "base": "edge_tpu.yaml", "space": {
        "student": {"choice": [{"arch": "resnet8"}, {"arch": "resnet8", "arch_args": {"width": 2}}]},
        "data.image_size": {"int": [8, 16], "step": 4}}})
    assert grid_size(spec.space) == 6 and len(grid(spec.space)) == 6
    raw = apply({"student": {"arch": "resnet20", "stages": None}}, {"student": {"arch": "resnet8", "arch_args": {"width": 2}},
                                                                    "data.image_size": 12})
    assert raw == {"student": {"arch": "resnet8", "stages": None, "arch_args": {"width": 2}}, "data": {"image_size": 12}}


def test_an_interrupted_trial_is_queued_again_once_with_the_same_candidate():
    """Ctrl-C fails the running trial without a reason of its own: the next worker queues its candidate again (the
    grid sampler would otherwise take the point as visited); a trial that failed for its own reason is not."""
    import optuna
    from optuna.trial import TrialState

    from pipeline.sweep.study import requeue_interrupted

    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"student.arch": optuna.distributions.CategoricalDistribution(["resnet8", "resnet14", "resnet20"])}
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"student.arch": "resnet8"}, distributions=dist,
                                        user_attrs={"interrupted": True}))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"student.arch": "resnet14"}, distributions=dist,
                                        user_attrs={"error": "not a valid recipe"}))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"student.arch": "resnet20"}, distributions=dist))
    assert requeue_interrupted(study) == [0]  # not the one with a reason, not the killed one (the heartbeat's)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == {"student.arch": "resnet8"} and waiting[0].system_attrs["failed_trial"] == 0
    assert requeue_interrupted(study) == []  # once


def test_the_ready_sweep_is_found_by_name_and_its_space_validates(tmp_path, monkeypatch):
    from pipeline.sweep.spec import check_space, grid_size, load_sweep

    monkeypatch.chdir(tmp_path)
    spec = load_sweep("edge_tpu_students.yaml")
    check_space(spec)  # every candidate is a valid edge_tpu recipe
    assert grid_size(spec.space) == 6 == spec.budget.trials and spec.constraints.fully_mapped


def test_the_pruner_waits_out_the_warm_up_then_stops_a_curve_below_the_median():
    """Three finished curves at 0.8 per epoch; a fourth at 0.2 is left alone for the warm-up (half of 10 epochs),
    then pruned at epoch 6 with its reason recorded."""
    from types import SimpleNamespace

    import optuna

    from pipeline.sweep.trial import pruning_hook

    curves = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    for _ in range(3):
        done = curves.ask()
        for epoch in range(1, 11):
            done.report(0.8, step=epoch)
        curves.tell(done, 0.8)
    attrs = {}
    trial = SimpleNamespace(set_user_attr=attrs.__setitem__)
    hook = pruning_hook(curves.ask(), trial, warmup=5)
    hook("distill", 1, {"epoch": 1, "val_acc": 0.1})  # a second seed: not the curve
    for epoch in range(1, 6):
        hook("distill", 0, {"epoch": epoch, "val_acc": 0.2})  # the warm-up: never pruned
    with pytest.raises(optuna.TrialPruned):
        hook("distill", 0, {"epoch": 6, "val_acc": 0.2})
    assert attrs["pruned_at"] == "distill epoch 6" and "below the median" in attrs["pruned"]


def test_a_dead_trial_is_queued_again_once_however_many_workers_fail_it(tmp_path):
    """Two workers failing the same stale trial (SQLite has no row lock) queue one retry between them; a retry that
    dies too is queued again, up to RetryOnce.MAX_RETRY."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    from pipeline.sweep.study import RetryOnce

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    dist = {"student.arch": CategoricalDistribution(["resnet8", "mobile_half"])}
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, params={"student.arch": "resnet8"},
                                        distributions=dist))
    dead = study.trials[0]
    first, second = RetryOnce(tmp_path / "study.db.retry.lock"), RetryOnce(tmp_path / "study.db.retry.lock")
    first(study, dead)
    second(study, dead)
    waiting = [t for t in study.trials if t.state.name == "WAITING"]
    assert len(waiting) == 1 and waiting[0].params == dead.params and waiting[0].system_attrs["failed_trial"] == 0
    retry = study.trials[1]  # it dies too: queued again, with the first trial's number and both in its history
    study._storage.set_trial_state_values(retry._trial_id, state=optuna.trial.TrialState.FAIL)
    first(study, study.trials[1])
    again = study.trials[2]
    assert again.system_attrs["retry_history"] == [0, 1] and again.system_attrs["failed_trial"] == 0
    second(study, study.trials[1])
    assert len(study.trials) == 3
