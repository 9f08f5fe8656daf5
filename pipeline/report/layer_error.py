"""The report's "int8 error per layer" section: the export stage's worst layers as a table and a bar plot.

Reads ``report["layer_error"]`` (the export metrics' summary of ``layer_error.json``); absent in runs
exported before it existed or with ``export.layer_error_images: 0``, and then the section is left out.
"""

from __future__ import annotations

from typing import Any

from pipeline.export.layer_error import short_name
from pipeline.report.tables import Table

TITLE = "Int8 error per layer"
LOW_SQNR_DB = 20.0  # below this a layer's quantisation noise is more than a tenth of its signal: marked in the plot
NOTE = ("Each quantised tensor of {artifact} dequantised and compared with the same tensor of {reference} (one onnx2tf "
        "conversion, same op names) on {images} calibration images; worst SQNR first, {shown} of {layers} layers "
        "(all in {file}). SQNR = 10·log10(Σ fp32² / Σ (fp32 − int8)²): ≈ 40 dB is clean 8-bit rounding, below "
        "{low:g} dB the error is over a tenth of the signal. Errors add up along the graph: the first layer whose SQNR drops "
        "well below its inputs' is where it breaks. Clipped: share of fp32 values outside the int8 range (calibrated range "
        "too narrow) as opposed to rounding.")


def note(report: dict[str, Any]) -> str | None:
    info = report.get("layer_error")
    if not info:
        return None
    if info.get("error"):
        return f"No per-layer numbers for {info['artifact']}: {info['error']}"
    return NOTE.format(shown=len(info["records"]), low=LOW_SQNR_DB, **info)


def table(report: dict[str, Any]) -> Table | None:
    info = report.get("layer_error")
    if not info or not info.get("records"):
        return None
    headers = ["#", "Layer (fused ops)", "Op", "Shape", "SQNR (dB)", "Rel. error", "Cosine", "Clipped", "Scale"]
    rows = [[str(r["index"]), short_name(r["name"]), r["op"], "×".join(str(d) for d in r["shape"]), _db(r["sqnr_db"]),
             _f(r["rel_error"], 4), _f(r["cosine"], 5), f"{100 * r['clipped']:.2f} %", f"{r['scale']:.3g}"]
            for r in info["records"]]
    return headers, rows


def figure(report: dict[str, Any]) -> bytes | None:
    """Horizontal bars of SQNR, worst layer on top; bars under ``LOW_SQNR_DB`` in red."""
    from pipeline.report.plots import _plt, _png

    info = report.get("layer_error")
    rows = [r for r in (info or {}).get("records", []) if r["sqnr_db"] is not None]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.2))
    labels = [f"{short_name(r['name'])} ({r['op']})" for r in rows]
    values = [r["sqnr_db"] for r in rows]
    ax.barh(range(len(rows)), values, color=["#cf222e" if v < LOW_SQNR_DB else "#4c72b0" for v in values])
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(LOW_SQNR_DB, color="#888", linestyle="--", linewidth=1)
    ax.set_xlabel("SQNR vs fp32 (dB), higher is better")
    ax.set_title(f"{info['artifact']}: worst {len(rows)} layers", fontsize=10)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=7)
    return _png(fig)


def _db(x) -> str:
    return "" if x is None else f"{x:.1f}"


def _f(x, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"
