"""The report's "Automatic int8 decisions" section: every auto choice the run made, and the interval it rested on.

Each automatic int8 choice records a ``decision`` (``pipeline/decision.py``: images, the paired 95 % interval of
the complex choice's top-1 minus the simpler one's, ``supported``, a ``note`` under 500 images) beside its own
reason: the QAT guard in the QAT stage's metrics (``guard``, also ``guard.json``), the export's remedies in the
export stage's (``pipeline/export/stage.py`` ``REMEDIES``; the sidecars carry the same records). This section reads
those records and invents none: a choice that did not run (set off, ``keep_float`` patterns, a format not exported,
QAT off) recorded no ``decision`` and has no row, and a run without any has no section.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.decision import bracket
from pipeline.stage_metrics import ExportMetrics, QatMetrics

TITLE = "Automatic int8 decisions"
RULE = ("An export remedy is adopted only when the paired 95 % interval of its top-1 minus the simpler artifact's lies "
        "above 0 (\"supports it\"); otherwise the simpler one is kept. The QAT guard keeps QAT unless it loses beyond "
        "qat.guard_tolerance, and records the same interval beside that rule (pipeline/decision.py).")


def _guard(r: dict) -> str:
    return "QAT weights kept" if r.get("export") == "qat" else "distilled weights (PTQ) exported"


def _keep_float(r: dict) -> str:
    kept = r.get("kept") or []
    return f"{len(kept)} layer(s) kept in float" if kept else "all-int8 kept"


def _accuracy_control(r: dict) -> str:
    if not r.get("used"):
        return "plain int8 kept"
    return f"accuracy-controlled int8 adopted ({len(r.get('float_layers') or [])} layer(s) in float)"


def _converter(r: dict) -> str:
    return "litert-torch adopted" if r.get("chosen") == "litert_torch" else "onnx2tf kept"


def _recalibration(r: dict) -> str:
    return f"recalibrated on {r.get('calibration_images')} images, adopted" if r.get("used") else "first conversion kept"


# the export metrics' remedy records (pipeline/export/stage.py REMEDIES), in the report's order:
# name -> (what the report calls it, the artifact it acts on (None: one record per format key), what it came to)
EXPORT_CHOICES: dict[str, tuple[str, str | None, Callable[[dict], str]]] = {
    "tflite_converter": ("TFLite converter", "tflite_int8", _converter),
    "tflite_recalibration": ("TFLite recalibration", "tflite_int8", _recalibration),
    "keep_float": ("keep_float auto", None, _keep_float),
    "openvino_accuracy_control": ("OpenVINO accuracy control", "openvino_int8", _accuracy_control),
}


def section(qat: QatMetrics | None, export: ExportMetrics | None) -> list[dict[str, Any]] | None:
    """report.json's ``decisions``: one row per recorded ``decision``, the QAT guard first, then the export's remedies
    in ``EXPORT_CHOICES``' order; None when the run recorded none."""
    rows = []
    guard = qat.guard if qat is not None else None
    if _decided(guard):
        outcome = _guard(guard)
        source = getattr(export, "source", None)
        if source in ("qat", "distill") and source != guard.get("export"):
            outcome += f" (not followed: the export used the {'QAT' if source == 'qat' else 'distilled'} weights)"
        rows.append(_row("QAT guard", "qat.guard", None, outcome, guard))
    for name, (label, artifact, came_to) in EXPORT_CHOICES.items():
        record = getattr(export, name, None)
        if artifact is not None:
            if _decided(record):
                rows.append(_row(label, f"export.{name}", artifact, came_to(record), record))
            continue
        for key, per_format in (record or {}).items():
            if _decided(per_format):
                rows.append(_row(f"{label} ({key})", f"export.{name}.{key}", key, came_to(per_format), per_format))
    return rows or None


def _decided(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("decision"), dict)


def _row(choice: str, recorded_in: str, artifact: str | None, outcome: str, record: dict) -> dict[str, Any]:
    d = record["decision"]
    return {"choice": choice, "recorded_in": recorded_in, "artifact": artifact, "outcome": outcome,
            "reason": record.get("reason"), "images": d["images"], "one_image_pts": d.get("one_image_pts"),
            "difference_pts": d.get("difference_pts"), "ci95_pts": d.get("ci95_pts"), "split": d.get("split", "validation"),
            "supported": bool(d.get("supported")), "note": d.get("note")}


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The rows for report.md/html: a pair that was never compared shows no difference and says so."""
    headers = ["Choice", "Outcome", "Top-1 difference", "95 % interval", "Images", "Interval supports it"]
    return headers, [[r["choice"], r["outcome"], *_interval(r), _images(r),
                      "—" if r["difference_pts"] is None else "yes" if r["supported"] else "no"] for r in rows]


def _interval(r: dict[str, Any]) -> tuple[str, str]:
    if r["difference_pts"] is None:
        return "—", "not compared"
    return f"{r['difference_pts']:+.2f} pts", bracket(r["ci95_pts"])


def _images(r: dict[str, Any]) -> str:
    if not r["images"]:
        return f"none ({r['split']})"
    one = f", one image = {r['one_image_pts']:.2f} pts" if r.get("note") else ""
    return f"{r['images']} {r['split']}{one}"


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """Each choice's recorded reason, the fewer-than-500-images notes (each said once), and the rule."""
    out = [f"{r['choice']}: {r['reason']}." for r in rows if r["reason"]]
    out += [f"Few images: {n}." for n in dict.fromkeys(r["note"] for r in rows if r.get("note"))]
    return [*out, RULE]
