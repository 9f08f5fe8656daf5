"""export.keep_float's shared rules: which nodes a pattern list keeps, and auto's choice of the fewest float layers."""

import numpy as np
import pytest

from pipeline.config import validate_config
from pipeline.export.keep_float import MAX_CANDIDATES, choose_float_layers, matched, most_lost_first, pattern_record, sqnr_lost


def hits_of(acc: float, n: int = 1000) -> np.ndarray:
    """Per-image correctness at top-1 ``acc``: the first images right, so a better model gets every image a worse one
    gets (the pairs all go one way)."""
    return np.arange(n) < round(acc * n)


def scorer(accuracy_of):
    """A ``choose_float_layers`` score from a synthetic accuracy of the kept set."""
    return lambda kept: hits_of(accuracy_of(kept))

def ranked(names):
    """The candidates as ``rank`` returns them, worst first, no SQNR measured."""
    return lambda: [(n, None) for n in names]


NODES = ["/stage0/conv/Conv", "/stage0/relu/Relu", "/stage1/conv/Conv", "/head/Gemm"]


def test_patterns_are_searched_in_node_names_and_unmatched_ones_are_recorded():
    assert matched(["stage0/conv", "Gemm$"], NODES) == (["/stage0/conv/Conv", "/head/Gemm"], [])
    assert matched(["stage9", "head"], NODES) == (["/head/Gemm"], ["stage9"])
    rec = pattern_record(["stage1", "nowhere"], NODES, "nodes_to_exclude")
    assert rec["kept"] == ["/stage1/conv/Conv"] and rec["unmatched"] == ["nowhere"]
    assert rec["reason"].startswith("1 layer(s) kept in float") and "1 pattern(s) match no node" in rec["reason"]


def test_the_layer_that_crushes_a_tensor_ranks_first_not_the_deepest():
    # input -> conv1 -> relu1 -> dw (the outlier layer) -> relu2 -> add(relu2, relu1) -> head: measured tensors only
    # input, relu1, relu2, add, head; conv1 and dw are walked through
    reads = {"conv1": ["input"], "relu1": ["conv1"], "dw": ["relu1"], "relu2": ["dw"], "add": ["relu2", "relu1"],
             "head": ["add"]}
    sqnr = {"input": 45.0, "relu1": 31.0, "relu2": 11.0, "add": 10.5, "head": 9.0, "unmeasured_out": None}
    lost = sqnr_lost(sqnr, lambda name: reads.get(name, []))
    # each loss against the worst nearest measured tensor upstream: add reads relu2 (11) and relu1 (31) -> 11 - 10.5
    assert lost["input"] is None and lost["unmeasured_out"] is None
    assert [lost[k] for k in ("relu1", "relu2", "add", "head")] == pytest.approx([14.0, 20.0, 0.5, 1.5])
    assert most_lost_first(lost) == ["relu2", "relu1", "head", "add", "input", "unmeasured_out"]
    # the lowest SQNR would have named the head first
    assert min((v, k) for k, v in sqnr.items() if v is not None)[1] == "head"


def test_auto_keeps_nothing_when_plain_int8_keeps_the_rule():
    rec = choose_float_layers(ranked(NODES), lambda kept: pytest.fail("no quantisation needed"), 0.90, hits_of(0.895), "m")
    assert rec["kept"] == [] and rec["tried"] == [] and "nothing kept in float" in rec["reason"]
    assert rec["decision"]["images"] == 1000 and rec["decision"]["ci95_pts"] is None and "note" not in rec["decision"]


def test_auto_finds_the_one_layer_that_does_it():
    scores = {"/stage0/conv/Conv": 0.95, "/stage1/conv/Conv": 0.80}  # 0.95 / 0.96 = 98.96 %: not enough alone

    def score(kept):
        return 0.955 if kept == ["/stage0/relu/Relu"] else scores.get(kept[0], 0.70) if len(kept) == 1 else 0.96

    rec = choose_float_layers(ranked(NODES), scorer(score), 0.96, hits_of(0.70), "m")
    assert rec["kept"] == ["/stage0/relu/Relu"]  # 0.955 / 0.96 = 99.5 %
    assert len(rec["tried"]) == len(NODES)  # each alone, nothing more
    assert rec["val_accuracy"] == 0.955 and "with 1 layer(s) in float, int8 keeps 99.48%" in rec["reason"]


def test_auto_adds_the_most_helpful_layers_until_the_rule_holds():
    gain = {"/stage0/conv/Conv": 0.10, "/stage0/relu/Relu": 0.02, "/stage1/conv/Conv": 0.08, "/head/Gemm": 0.0}

    def score(kept):  # additive gains from 0.70, fp32 0.90: needs ≥ 0.891
        return 0.70 + sum(gain[k] for k in kept)

    rec = choose_float_layers(ranked(NODES), scorer(score), 0.90, hits_of(0.70), "m")
    assert rec["kept"] == ["/stage0/conv/Conv", "/stage1/conv/Conv", "/stage0/relu/Relu"]
    assert rec["val_accuracy"] == pytest.approx(0.90)
    k = rec["kept"]  # added one at a time, then each but the last tried without (neither can go: 0.82, 0.80)
    assert [t["kept"] for t in rec["tried"][len(NODES):]] == [k[:2], k, [k[0], k[2]], [k[1], k[2]]]
    assert "not needed" not in rec["reason"]


def test_auto_drops_a_layer_the_later_ones_make_unneeded():
    # conv0 helps most alone, but relu0 + conv1 fix what it fixes and more: once both are in, conv0 can go
    def score(kept):
        k = set(kept)
        if {"/stage0/relu/Relu", "/stage1/conv/Conv"} <= k:
            return 0.90
        return 0.70 + 0.12 * ("/stage0/conv/Conv" in k) + 0.05 * ("/stage0/relu/Relu" in k) + 0.04 * ("/stage1/conv/Conv" in k)

    rec = choose_float_layers(ranked(NODES), scorer(score), 0.90, hits_of(0.70), "m")
    assert rec["kept"] == ["/stage0/relu/Relu", "/stage1/conv/Conv"]  # found as conv0, relu0, conv1; conv0 dropped
    assert rec["val_accuracy"] == pytest.approx(0.90)
    assert "with 2 layer(s) in float" in rec["reason"] and "(1 of the 3 added were not needed)" in rec["reason"]


def test_auto_ships_all_int8_when_no_set_reaches_the_rule():
    names = [f"n{i}" for i in range(MAX_CANDIDATES + 5)]
    rec = choose_float_layers(ranked(names), scorer(lambda kept: 0.5 + 0.001 * len(kept)), 0.9, hits_of(0.5), "m")
    assert rec["kept"] == [] and "all-int8 kept" in rec["reason"]
    assert sum(len(t["kept"]) == 1 for t in rec["tried"]) == MAX_CANDIDATES  # at most that many tried alone
    assert rec["best_tried"]["val_accuracy"] == max(t["val_accuracy"] for t in rec["tried"])


def test_auto_keeps_all_int8_when_the_set_wins_by_one_image_of_144():
    plain = np.arange(144) < 128  # 88.89 % of fp32 0.90: 98.77 %, misses the rule
    rec = choose_float_layers(ranked(NODES), lambda kept: np.arange(144) < 129, 0.90, plain, "m")  # 99.54 %: keeps it
    assert rec["kept"] == [] and "val_accuracy" not in rec and rec["best_tried"]["kept"] == [NODES[0]]
    got = rec["decision"]
    assert got["supported"] is False and got["images"] == 144 and got["difference_pts"] == pytest.approx(0.6944)
    assert got["ci95_pts"][0] < 0 < got["ci95_pts"][1] and "(one image = 0.69 pts)" in got["note"]
    assert f"the interval [{got['ci95_pts'][0]:+.2f}, {got['ci95_pts'][1]:+.2f}] pts on 144 images cannot support it: " \
           "all-int8 kept" in rec["reason"]


def test_auto_adopts_a_set_that_is_better_beyond_doubt():
    rec = choose_float_layers(ranked(NODES), lambda kept: np.arange(144) < 140, 0.97, np.arange(144) < 120, "m")
    assert rec["kept"] == [NODES[0]] and rec["decision"]["supported"] is True and rec["decision"]["ci95_pts"][0] > 0
    assert "supports it" in rec["reason"] and rec["decision"]["split"] == "validation"


def test_a_cpu_target_takes_the_key():
    cfg = validate_config({"target": {"name": "rpi4"}, "export": {"keep_float": "auto"}}, source="x.yaml")
    assert cfg.export.keep_float == "auto"
    assert validate_config({}, source="x.yaml").export.keep_float == []
