"""The paired interval every int8 auto choice is judged by (pipeline/decision.py)."""

import numpy as np
import pytest

from pipeline.decision import decision, paired_difference, unsupported, untried


def pairs(both: int, only_new: int, only_old: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image hits of two models from the paired 2×2 table."""
    new = np.array([1] * both + [1] * only_new + [0] * only_old + [0] * neither, bool)
    old = np.array([1] * both + [0] * only_new + [1] * only_old + [0] * neither, bool)
    return new, old


def test_newcombe_by_hand_on_the_cavo_table():
    # (59, 6, 16, 80), n = 161: p1 = 65/161 = 0.40373, p2 = 75/161 = 0.46584; Wilson 95 %: p1 in [0.33104, 0.48090],
    # p2 in [0.39048, 0.54279]; ad − bc = 4624 > n/2 → phi = (4624 − 80.5) / √(65·96·75·86) = 0.71617;
    # L = −0.06211 − √(0.07269² + 0.07695² − 2·0.71617·0.07269·0.07695) = −0.11862, and U likewise = −0.00462
    # (the Cavo et al. 2012 table of Fagerland, Lydersen & Laake's paired-2×2 chapter)
    got = paired_difference(*pairs(59, 6, 16, 80))
    assert got["images"] == 161 and got["one_image_pts"] == pytest.approx(100 / 161, abs=1e-4)
    assert got["difference_pts"] == pytest.approx(-6.2112, abs=1e-3)
    assert got["ci95_pts"] == pytest.approx([-11.862, -0.4625], abs=2e-3)


def test_swapping_the_models_mirrors_the_interval():
    a, b = paired_difference(*pairs(100, 9, 2, 33)), paired_difference(*reversed(pairs(100, 9, 2, 33)))
    assert b["difference_pts"] == -a["difference_pts"] and b["ci95_pts"] == pytest.approx([-a["ci95_pts"][1], -a["ci95_pts"][0]])


def test_identical_models_straddle_zero_and_nothing_is_supported():
    for table in ((100, 0, 0, 44), (144, 0, 0, 0), (0, 0, 0, 144)):
        got = decision(*pairs(*table))
        lo, hi = got["ci95_pts"]
        assert got["difference_pts"] == 0 and lo < 0 < hi and got["supported"] is False


def test_no_images_is_a_record_without_an_interval():
    got = decision(np.array([], bool), np.array([], bool))
    assert got["images"] == 0 and got["ci95_pts"] is None and got["supported"] is False and "no images" in got["note"]
    assert unsupported(got, "plain int8").startswith("no images")
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


def test_one_image_of_144_cannot_decide_and_a_clear_win_can():
    close = decision(*pairs(100, 1, 0, 43))
    assert close["supported"] is False and close["ci95_pts"][0] < 0 < close["ci95_pts"][1]
    assert "144 images, fewer than the 500 asked (one image = 0.69 pts)" in close["note"]
    assert "data.val_fraction" in close["note"] and close["split"] == "validation"
    assert "cannot support it: plain int8 kept" in unsupported(close, "plain int8")
    assert decision(*pairs(100, 4, 0, 40))["supported"] is False  # Wald would pass 4-0 (McNemar's exact p = 0.125)
    clear = decision(*pairs(300, 40, 2, 258))
    assert clear["supported"] is True and "note" not in clear and clear["images"] == 600


def test_an_untried_choice_records_its_split_without_an_interval():
    got = untried(144)
    assert got["ci95_pts"] is None and got["supported"] is False and "one image = 0.69 pts" in got["note"]
    assert "note" not in untried(600, "validation")
