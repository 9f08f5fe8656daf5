"""Confidence intervals for the report's accuracies: a top-1 on 359 images is ±2–3 points, and the report says so."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``correct / n`` (Wilson 1927; Brown, Cai & DasGupta 2001).

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 100 %:
    2/2 correct gives about (0.34, 1.0). None for n = 0.
    """
    if n <= 0:
        return None
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(top1: float | None, n: int | None) -> list[float] | None:
    """The Wilson 95 % interval of a top-1 fraction measured on ``n`` images (rounded to 6 decimals), or None."""
    if top1 is None or not n:
        return None
    ci = wilson_interval(round(top1 * n), n)
    return None if ci is None else [round(ci[0], 6), round(ci[1], 6)]
