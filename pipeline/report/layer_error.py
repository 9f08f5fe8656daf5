"""The report's "int8 error per layer" section: for each int8 artifact compared, its worst layers as a table and a bar plot.

Reads ``report["layer_error"]`` (format key → the export metrics' summary of that artifact's ``layer_error.json``);
absent in runs exported before it existed or with ``export.layer_error_images: 0``, and then the section is left out.
"""

from __future__ import annotations

from typing import Any

from pipeline.formats import FORMATS
from pipeline.formats.layer_names import short_name
from pipeline.report.tables import Table

TITLE = "Int8 error per layer"
LOW_SQNR_DB = 20.0  # below this a layer's quantisation noise is more than a tenth of its signal: marked in the plot
# how each family's int8 tensors are paired with fp32 ones (pipeline/export/layer_error.py, layer_error_openvino.py)
PAIRING = {
    "tflite": "each quantised tensor of {artifact} dequantised and compared with the same tensor of {reference} (one onnx2tf "
              "conversion, same op names)",
    "openvino": "each quantised activation of {artifact} (a FakeQuantize's output) compared with the same-named op of "
                "{reference} (NNCF keeps the ONNX names), the float logits too",
}
# what acts on a family's worst layers here (export.keep_float: pipeline/export/keep_float.py)
KEEP_FLOAT = ("export.keep_float keeps named layers (node-name patterns) or auto's fewest layers (≥ 99 % of fp32 on the "
              "validation split) in float, on targets that run float ops; integer-only targets (Edge TPU) refuse it.")
REMEDIES = {
    "tflite": "What acts on it: export.tflite_recalibration: auto (when int8 keeps < 99 % of fp32 on the validation split, "
              "calibrated again on 4× the images (clipped ranges), and with the other weight scheme where the target runs both, "
              "the best kept if better beyond doubt), export.tflite_converter: auto "
              "(litert-torch's int8 when its validation top-1 is higher beyond doubt, else onnx2tf's), QAT (its guard ships the QAT "
              "weights when their int8 is better). The weight scheme is the target's rule (per-channel or per-tensor) "
              "unless recalibration shipped the other. "
              + KEEP_FLOAT + " (TensorFlow's Quantization Debugger, denylisted_nodes).",
    "openvino": "What acts on it: export.openvino_accuracy_control: auto reverts the layers that cost the most top-1 to float "
                "(NNCF's accuracy-aware quantisation) when plain int8 keeps < 99 % of fp32 on the validation split. "
                + KEEP_FLOAT + " (NNCF ignored_scope).",
}
NOTE = ("{pairing} on {images} calibration images; worst SQNR first, {shown} of {layers} tensors (all in {file}). "
        "SQNR = 10·log10(Σ fp32² / Σ (fp32 − int8)²): ≈ 40 dB is clean 8-bit rounding, below {low:g} dB the error is over "
        "a tenth of the signal. Errors add up along the graph: the first layer whose SQNR drops well below its inputs' is "
        "where it breaks. Clipped: share of fp32 values outside the int8 range (calibrated range too narrow) as opposed "
        "to rounding.")


def artifacts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Format key → its per-layer summary, in the report's order (empty when the run has none)."""
    return dict(report.get("layer_error") or {})


def heading(key: str) -> str:
    return FORMATS[key].label if key in FORMATS else key


def note(key: str, info: dict[str, Any]) -> str:
    if info.get("error"):
        return f"No per-layer numbers for {info['artifact']}: {info['error']}"
    family = FORMATS[key].family if key in FORMATS else "tflite"
    pairing = PAIRING.get(family, PAIRING["tflite"]).format(**info)
    text = NOTE.format(pairing=pairing[0].upper() + pairing[1:], shown=len(info["records"]), low=LOW_SQNR_DB, **info)
    return f"{text} {REMEDIES[family]}" if family in REMEDIES else text


def table(info: dict[str, Any]) -> Table | None:
    if not info.get("records"):
        return None
    headers = ["#", "Layer (fused ops)", "Op", "Shape", "SQNR (dB)", "Rel. error", "Cosine", "Clipped", "Scale"]
    rows = [[str(r["index"]), short_name(r["name"]), r["op"], "×".join(str(d) for d in r["shape"]), _db(r["sqnr_db"]),
             _f(r["rel_error"], 4), _f(r["cosine"], 5), f"{100 * r['clipped']:.2f} %",
             "float" if r["scale"] is None else f"{r['scale']:.3g}"]
            for r in info["records"]]
    return headers, rows


def figure(info: dict[str, Any]) -> bytes | None:
    """Horizontal bars of SQNR, worst layer on top; bars under ``LOW_SQNR_DB`` in red."""
    from pipeline.report.plots import _plt, _png

    rows = [r for r in info.get("records", []) if r["sqnr_db"] is not None]
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
