"""export.keep_float's shared rules: which nodes a pattern list keeps, and auto's choice of the fewest float layers."""

import pytest

from pipeline.config import validate_config
from pipeline.export.keep_float import MAX_CANDIDATES, choose_float_layers, matched, pattern_record

NODES = ["/stage0/conv/Conv", "/stage0/relu/Relu", "/stage1/conv/Conv", "/head/Gemm"]


def test_patterns_are_searched_in_node_names_and_unmatched_ones_are_recorded():
    assert matched(["stage0/conv", "Gemm$"], NODES) == (["/stage0/conv/Conv", "/head/Gemm"], [])
    assert matched(["stage9", "head"], NODES) == (["/head/Gemm"], ["stage9"])
    rec = pattern_record(["stage1", "nowhere"], NODES, "nodes_to_exclude")
    assert rec["kept"] == ["/stage1/conv/Conv"] and rec["unmatched"] == ["nowhere"]
    assert rec["reason"].startswith("1 layer(s) kept in float") and "1 pattern(s) match no node" in rec["reason"]


def test_auto_keeps_nothing_when_plain_int8_keeps_the_rule():
    rec = choose_float_layers(NODES, lambda kept: pytest.fail("no quantisation needed"), 0.90, 0.895, "m", 500)
    assert rec["kept"] == [] and rec["tried"] == [] and "nothing kept in float" in rec["reason"]


def test_auto_finds_the_one_layer_that_does_it():
    scores = {"/stage0/conv/Conv": 0.95, "/stage1/conv/Conv": 0.80}  # 0.95 / 0.96 = 98.96 %: not enough alone

    def score(kept):
        return 0.955 if kept == ["/stage0/relu/Relu"] else scores.get(kept[0], 0.70) if len(kept) == 1 else 0.96

    rec = choose_float_layers(NODES, score, 0.96, 0.70, "m", 500)
    assert rec["kept"] == ["/stage0/relu/Relu"]  # 0.955 / 0.96 = 99.5 %
    assert len(rec["tried"]) == len(NODES)  # each alone, nothing more
    assert rec["val_accuracy"] == 0.955 and "with 1 layer(s) in float, int8 keeps 99.48%" in rec["reason"]


def test_auto_adds_the_most_helpful_layers_until_the_rule_holds():
    gain = {"/stage0/conv/Conv": 0.10, "/stage0/relu/Relu": 0.02, "/stage1/conv/Conv": 0.08, "/head/Gemm": 0.0}

    def score(kept):  # additive gains from 0.70, fp32 0.90: needs ≥ 0.891
        return 0.70 + sum(gain[k] for k in kept)

    rec = choose_float_layers(NODES, score, 0.90, 0.70, "m", 500)
    assert rec["kept"] == ["/stage0/conv/Conv", "/stage1/conv/Conv", "/stage0/relu/Relu"]
    assert rec["val_accuracy"] == pytest.approx(0.90)
    assert [t["kept"] for t in rec["tried"][len(NODES):]] == [rec["kept"][:2], rec["kept"]]


def test_auto_ships_all_int8_when_no_set_reaches_the_rule():
    names = [f"n{i}" for i in range(MAX_CANDIDATES + 5)]
    rec = choose_float_layers(names, lambda kept: 0.5 + 0.001 * len(kept), 0.9, 0.5, "m", 500)
    assert rec["kept"] == [] and "all-int8 kept" in rec["reason"]
    assert sum(len(t["kept"]) == 1 for t in rec["tried"]) == MAX_CANDIDATES  # at most that many tried alone
    assert rec["best_tried"]["val_accuracy"] == max(t["val_accuracy"] for t in rec["tried"])


def test_a_cpu_target_takes_the_key():
    cfg = validate_config({"target": {"name": "rpi4"}, "export": {"keep_float": "auto"}}, source="x.yaml")
    assert cfg.export.keep_float == "auto"
    assert validate_config({}, source="x.yaml").export.keep_float == []
