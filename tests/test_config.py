import pytest

from pipeline.config import load_config, resolve_recipe, validate_config
from pipeline.distill import LOSSES
from pipeline.errors import PipelineError


def test_ready_recipe_resolves_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("edge_tpu.yaml").name == "edge_tpu.yaml"
    assert load_config("edge_tpu").name == "edge_tpu"


def test_local_file_wins_over_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edge_tpu.yaml").write_text("name: mine\n")
    assert load_config("edge_tpu.yaml").name == "mine"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"distill": {"method": "rtkk"}}, "x.yaml: distill.method: unknown 'rtkk' (known: "),
        ({"data": {"foo": 1}}, "x.yaml: data.foo: unknown key (allowed: "),
        ({"distil": {}}, "did you mean 'distill'?"),
        ({"teacher": {"arch": "resnet21"}}, "teacher.arch: unknown 'resnet21'"),
        ({"teacher": {"optimizer": "adam"}}, "teacher.optimizer: 'adam' is not allowed ('sgd' or 'adamw')"),
        ({"data": {"dataset": "imagenet"}}, "data.dataset: unknown 'imagenet'"),
        ({"data": {"channels": 2}}, "data.channels: must be 1 or 3"),
        ({"distill": {"seeds": []}}, "distill.seeds: needs at least one seed"),
        ({"distill": {"method": "at", "options": {"pairz": "all"}}}, "distill.options.pairz: unknown key (allowed: pairs, positions, reference_size)"),
        ({"target": {"name": "rpi4"}, "export": {"keep_float": ["stage0", "(bad"]}},
         "export.keep_float: [1] '(bad' is not a regular expression"),
        ({"export": {"keep_float": "sometimes"}}, "export.keep_float: 'sometimes': give a list of node-name patterns"),
        ({"export": {"keep_float": "auto"}}, "export.keep_float: target edge_tpu runs integer-only models"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(raw, expected):
    with pytest.raises(PipelineError) as err:
        validate_config(raw, source="x.yaml")
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg


def test_overrides_are_validated_too():
    cfg = load_config("edge_tpu.yaml", {"distill.epochs": 2, "data.max_train": 50})
    assert cfg.distill.epochs == 2 and cfg.data.max_train == 50
    with pytest.raises(PipelineError, match="distill.epochs"):
        load_config("edge_tpu.yaml", {"distill.epochs": -1})


def test_missing_recipe_lists_the_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=r"nope.yaml: no such file .*edge_tpu.yaml"):
        load_config("nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("data:\n  dataset: [digits\n")
    with pytest.raises(PipelineError, match=r"broken.yaml: line \d+ not valid YAML"):
        load_config(p)


def test_method_options_and_weights_are_stored_with_defaults_so_the_cache_key_sees_them():
    cfg = validate_config({"distill": {"method": "at"}})
    assert cfg.distill.options == {"positions": "reference", "reference_size": 32, "pairs": "all"}
    assert {k: getattr(cfg.distill, k) for k in ("w_ce", "w_kd", "w_feat")} == LOSSES["at"].defaults
    assert validate_config({"distill": {"method": "at", "w_kd": 0.5}}).distill.w_kd == 0.5
