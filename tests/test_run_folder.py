"""Runs of different configs never overwrite each other: NAME-2 for a changed config, the same folder to resume."""

from __future__ import annotations

import json

import pytest

from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.run_folder import CONFIG_FILE, choose_run_dir, config_diff, config_hash, record_config


def finish(cfg):
    """Leave cfg's folder as a finished run does: its config recorded and the report stage's folder complete."""
    record_config(cfg) if cfg.run_dir.is_dir() else (cfg.run_dir.mkdir(parents=True), record_config(cfg))
    (cfg.run_dir / "08_report").mkdir(exist_ok=True)


def test_a_changed_config_goes_to_name_2_and_the_same_config_resumes_in_place(tiny_recipe):
    cfg = load_config(tiny_recipe)
    assert choose_run_dir(cfg) == (cfg, None)  # nothing there yet
    finish(cfg)
    assert choose_run_dir(cfg) == (cfg, None)  # same config: resume / --from / --fresh in place
    other = load_config(tiny_recipe, {"distill.method": "at"})
    moved, note = choose_run_dir(other)
    assert moved.name == "tiny-2" and moved.run_dir == cfg.run_dir.with_name("tiny-2")
    said, _, where = note.partition("); ")
    assert said.startswith(f"{cfg.run_dir} holds a finished run of another config (distill.method: kd → at; ")
    assert "distill.w_ce: 0.1 → 1.0" in said  # the method's default weights are part of the config (validate_config)
    assert where == f"this run goes to {moved.run_dir} (--name NAME picks the folder, --overwrite replaces {cfg.run_dir})"
    finish(moved)
    again, _ = choose_run_dir(other)
    assert again.run_dir == moved.run_dir  # the diverted run resumes in its own folder, no tiny-3
    third, _ = choose_run_dir(load_config(tiny_recipe, {"distill.epochs": 2}))
    assert third.name == "tiny-3"
    assert choose_run_dir(other, overwrite=True) == (other, None)


def test_an_unfinished_run_of_another_config_is_continued_in_place(tiny_recipe):
    cfg = load_config(tiny_recipe)
    cfg.run_dir.mkdir(parents=True)
    record_config(cfg)  # started, never reached the report
    other = load_config(tiny_recipe, {"distill.method": "at"})
    assert choose_run_dir(other) == (other, None)


def test_the_config_hash_ignores_where_the_run_is_kept(tiny_recipe):
    a = load_config(tiny_recipe).model_dump(mode="json")
    b = {**a, "name": "elsewhere", "runs_dir": "/tmp/x"}
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12
    assert config_diff(a, b) == []
    c = json.loads(json.dumps(a))
    c["qat"]["epochs"] = 7
    assert config_hash(c) != config_hash(a) and config_diff(a, c) == [("qat.epochs", a["qat"]["epochs"], 7)]


def test_the_run_loop_records_its_config(tiny_recipe):
    from pipeline.run import run_pipeline

    cfg = load_config(tiny_recipe)
    run_pipeline(cfg, until="data")
    assert json.loads((cfg.run_dir / CONFIG_FILE).read_text()) == cfg.model_dump(mode="json")


@pytest.fixture
def recorded(monkeypatch):
    """The CLI's run command with the stage loop replaced by a recorder of the folder it was given."""
    import pipeline.run

    seen = []
    monkeypatch.setattr(pipeline.run, "run_pipeline", lambda cfg, **kw: seen.append((cfg, kw)))
    return seen


def test_cli_name_and_divert_and_overwrite(tiny_recipe, recorded, capsys):
    assert main(["run", str(tiny_recipe), "--name", "mine", "--until", "data"]) == 0
    assert recorded[-1][0].name == "mine" and recorded[-1][1]["until"] == "data"
    cfg = load_config(tiny_recipe)
    finish(cfg)
    assert main(["run", str(tiny_recipe), "--set", "distill.method=at"]) == 0
    assert recorded[-1][0].name == "tiny-2"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a finished run of another config (distill.method: kd → at" in err[0]
    assert main(["run", str(tiny_recipe), "--set", "distill.method=at", "--overwrite"]) == 0
    assert recorded[-1][0].name == "tiny"
    assert main(["run", str(tiny_recipe), "--fresh"]) == 0  # same config: same folder, --fresh still honoured
    assert recorded[-1][0].name == "tiny" and recorded[-1][1]["fresh"] is True
