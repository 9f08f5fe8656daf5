"""A latency row's identity and its precision in words: shared by the benchmark stage, the board runner and the report.

Standard library only. The report reads the benchmark's rows and the board's; the benchmark writes them
without reading the report, so what both need lives here, below both (``pipeline.report.schema``
re-exports the row key as part of the report's layout).
"""

from __future__ import annotations

from typing import Any

LATENCY_STATS = ("mean", "std", "min", "max", "p50", "p90", "p99")
ROW_KEY = ("where", "device", "model", "artifact", "threads")


def row_key(row: dict[str, Any]) -> tuple:
    """Identity of a latency row: the same key in two reports is the same measurement, re-taken."""
    return tuple(row.get(k) for k in ROW_KEY)


def sample_key(row: dict[str, Any]) -> str:
    """Name of a row's per-call samples in the benchmark stage's ``latency_samples.npz``."""
    return "|".join(str(k) for k in row_key(row))


def precision_text(prec: dict[str, Any] | None) -> str:
    """'±2.1 %' (the larger 95 % half-width of p50 and p90), with why timing stopped when it was not the precision:
    '±4.2 % (time cap reached; target ±3 %)'. Empty without a record (a results file from before the precision rule)."""
    if not prec:
        return ""
    width = "± n/a" if prec.get("half_width_pct") is None else f"±{prec['half_width_pct']:.1f} %"
    if prec.get("reached") is False:
        return f"{width} (time cap reached; target ±{prec['target_pct']:g} %)"
    return width
