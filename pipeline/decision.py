"""How sure an automatic int8 choice is: the paired 95 % interval of two models' top-1 on the same images.

Every auto choice (OpenVINO accuracy control, ``keep_float: auto``, TFLite recalibration, the TFLite converter, the
QAT guard) compares two models on one split. On 144 validation images one image is 0.69 points, so a remedy that
wins by one image has not shown anything. The rule here: the more complex artifact is adopted only when the interval
of its top-1 minus the simpler one's lies above 0 (better beyond doubt at 95 %); otherwise the simpler one is kept,
and the record says why. The QAT guard is the exception by design: QAT is the stage's product and is kept unless it
loses beyond ``qat.guard_tolerance``; its record carries the same interval, so the two rules can be read side by side.

Torch-free (numpy only): the export and QAT stages both use it, and it sits below both.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
ASKED_IMAGES = 500  # the decision split the records ask for; fewer gets a note


def accuracy(hits) -> float:
    """Top-1 of per-image correctness (nan on no images)."""
    hits = np.asarray(hits, bool)
    return float(hits.mean()) if hits.size else float("nan")


def _wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson's score interval of one proportion."""
    p = successes / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return centre - half, centre + half


def paired_difference(hits_new, hits_old) -> dict:
    """Top-1 of ``hits_new`` minus ``hits_old`` (per-image correctness of two models on the same images), in points,
    with its 95 % interval.

    Newcombe's hybrid score interval for paired proportions (Newcombe 1998, Stat. Med. 17:2635, method 10; Wilson
    intervals of both accuracies combined through the continuity-corrected phi of the 2×2 table). Not the Wald
    interval of the per-image differences: with few discordant images it is too narrow (4 images won of 144 and none
    lost would pass, where McNemar's exact p is 0.125) and it collapses to [0, 0] when no image changes. Not Tango's
    score interval: as good, but it needs an iterative root search. Newcombe's is closed-form and keeps ~95 % coverage
    down to a handful of discordant images (Fagerland, Lydersen & Laake 2014 recommend it)."""
    new, old = np.asarray(hits_new, bool).ravel(), np.asarray(hits_old, bool).ravel()
    if new.shape != old.shape:
        raise ValueError(f"paired_difference: {new.size} and {old.size} images are not the same images")
    n = int(new.size)
    if n == 0:
        return {"images": 0, "one_image_pts": None, "difference_pts": None, "ci95_pts": None}
    both, only_new = int((new & old).sum()), int((new & ~old).sum())
    only_old, neither = int((~new & old).sum()), int((~new & ~old).sum())
    p1, p2 = (both + only_new) / n, (both + only_old) / n
    l1, u1 = _wilson(both + only_new, n)
    l2, u2 = _wilson(both + only_old, n)
    margins = (both + only_new) * (only_old + neither) * (both + only_old) * (only_new + neither)
    cross = both * neither - only_new * only_old
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    diff = p1 - p2
    lower = diff - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    upper = diff + math.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    pts = lambda v: round(100.0 * v, 4)  # noqa: E731
    return {"images": n, "one_image_pts": pts(1 / n), "difference_pts": pts(diff),
            "ci95_pts": [pts(max(lower, -1.0)), pts(min(upper, 1.0))]}


def decision(hits_new, hits_old, split: str = "validation") -> dict:
    """The ``decision`` record of a complex choice (``hits_new``) against the simpler one (``hits_old``) on ``split``:
    the paired interval, ``supported`` (its lower bound > 0), and a ``note`` when the split is under 500 images."""
    record = {**paired_difference(hits_new, hits_old), "split": split}
    record["supported"] = bool(record["images"]) and record["ci95_pts"][0] > 0
    return _noted(record)


def untried(images: int, split: str = "validation") -> dict:
    """The ``decision`` record where the simpler artifact was never challenged (it keeps the 99 % rule, or the remedy
    is off or failed): the split and its size, no interval."""
    n = int(images)
    return _noted({"images": n, "one_image_pts": round(100.0 / n, 4) if n else None, "difference_pts": None,
                   "ci95_pts": None, "split": split, "supported": False})


def _noted(record: dict) -> dict:
    """``record`` with its ``note`` when its split is smaller than the 500 images asked."""
    if record["images"] < ASKED_IMAGES:
        one = f"one image = {record['one_image_pts']:.2f} pts" if record["images"] else "no images"
        record["note"] = (f"the decision split ({record['split']}) has {record['images']} images, fewer than the "
                          f"{ASKED_IMAGES} asked ({one}); data.val_fraction enlarges the data's validation split")
    return record


def bracket(ci95_pts) -> str:
    """An interval as reasons and the report write it: "[lo, hi] pts"."""
    lo, hi = ci95_pts
    return f"[{lo:+.2f}, {hi:+.2f}] pts"


def interval(record: dict) -> str:
    """The interval in a reason: "the interval [lo, hi] pts on N images"."""
    if not record["images"]:
        return "no images"
    return f"the interval {bracket(record['ci95_pts'])} on {record['images']} images"


def unsupported(record: dict, simpler: str) -> str:
    """The reason's clause when the interval cannot carry the complex choice."""
    if not record["images"]:
        return f"no images to judge on: {simpler} kept"
    return f"{interval(record)} cannot support it: {simpler} kept"


def supported_clause(record: dict) -> str:
    """The reason's clause when it can."""
    return f"{interval(record)} supports it"
