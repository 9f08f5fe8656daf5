"""The report's "where accuracy and time go" section: per int8 artifact, each node's int8 error beside its time.

Two diagnoses of one model meet here, joined by graph node: the export's per-layer error (``layer_error.json``
beside the artifact: SQNR and clipped share of each quantised tensor, named as in the ONNX graph) and the engine's
per-op time (``07_benchmark/op_time.json``, or a board's, merged from its device results file: the engine's own node
names, fused kernels included). An engine node goes to the graph node whose name or output tensor it starts with
(``explore.node_for``, the matching the Model Explorer overlay uses), so ``/conv2/Conv/WithoutBiases`` is the time of
the layer ``/conv2/Conv``. "Kept in float" is what the int8 sidecar records: NNCF accuracy control's
``quantization.accuracy_control.float_layers`` and a ``quantization.keep_float.kept`` list.

Only measured numbers are shown: a column nothing measured says why (LiteRT has no op profiler; ONNX int8 has no
per-layer error), and no figure is estimated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.formats.layer_names import short_name
from pipeline.report.explore import INT8_KEYS, node_for, ops_by_node

TITLE = "Where accuracy and time go"
SHOWN = 15  # rows per artifact in report.md/html; report.json holds all
NO_LAYER_ERROR = {"onnx_int8": "no per-layer error for ONNX int8 (the export compares TFLite and OpenVINO int8 tensors only)"}
FUSED = ("a node with SQNR and no ms ran fused into a neighbour (the engine times its convolution with the activation "
         "after it)")


@dataclass
class Sources:
    """What the run recorded about one int8 artifact, each part absent where the run has none."""

    layer_error: dict | None = None  # its layer_error.json
    op_time: dict | None = None  # its table in 07_benchmark/op_time.json
    sidecar: dict | None = None  # its sidecar (what was kept in float)
    ids: dict[str, str] | None = None  # the ONNX graph's names → node ids (``explore.graph_nodes``), to join by


def read_sources(export_dir: Path | None, benchmark_dir: Path | None) -> dict[str, Sources]:
    """Each int8 artifact's sources in a run's export and benchmark folders (an unreadable file is left out)."""
    from pipeline.artifacts import read_json
    from pipeline.export.layer_error import LAYER_ERROR_FILE
    from pipeline.formats.sidecar import sidecar_path
    from pipeline.stages import ARTIFACTS_FILE, OP_TIME_FILE

    listed = _json(Path(export_dir) / ARTIFACTS_FILE, read_json) if export_dir else None
    op_time = _json(Path(benchmark_dir) / OP_TIME_FILE, read_json) if benchmark_dir else None
    out = {}
    for key in INT8_KEYS:
        if key not in (listed or {}) and key not in (op_time or {}):
            continue
        src = Sources(op_time=(op_time or {}).get(key))
        if key in (listed or {}):
            artifact = Path(export_dir) / listed[key]
            error = _json(artifact.parent / LAYER_ERROR_FILE, read_json)
            if error and error.get("artifact") == listed[key]:  # tflite_int8's file lies beside student_int8.onnx too
                src.layer_error = error
            src.sidecar = _json(sidecar_path(artifact), read_json)
            if src.op_time and src.op_time.get("measured"):
                src.ids = _graph_ids(Path(export_dir), listed, key)
        out[key] = src
    return out


def _json(path: Path, read) -> Any:
    try:
        return read(path) if path.is_file() else None
    except ValueError:
        return None


def _graph_ids(export_dir: Path, listed: dict[str, str], key: str) -> dict[str, str] | None:
    """The names of the ONNX graph the artifact's layers are named after (the overlay's model), when it reads."""
    from pipeline.report.explore import graph_nodes, overlay_model

    try:
        model = overlay_model(export_dir, listed, key)
        return graph_nodes(model)[1] if model.suffix == ".onnx" and model.is_file() else None
    except Exception:  # noqa: BLE001 - the join falls back to the layers' own names
        return None


def kept_in_float(sidecar: dict | None) -> tuple[list[str] | None, str | None]:
    """(nodes kept in float, where that is recorded), or (None, why unknown), from the int8 sidecar's ``quantization``."""
    q = (sidecar or {}).get("quantization") or {}
    control, keep = q.get("accuracy_control"), q.get("keep_float")
    if control is None and keep is None:
        return None, "not recorded: the int8 sidecar names no layers kept in float (no accuracy control, no keep_float)"
    kept, said = [], []
    if control is not None:
        kept += list(control.get("float_layers") or []) if control.get("used") else []
        said.append("quantization.accuracy_control" + (".float_layers" if control.get("used") else " (not used)"))
    if keep is not None:
        kept += list(keep.get("kept") or [])
        said.append("quantization.keep_float.kept")
    return sorted(set(kept)), "the int8 sidecar's " + " and ".join(said)


def join(layer_error: dict | None, op_time: dict | None, kept: list[str] | None,
         ids: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per graph node: its worst tensor's SQNR and clipped share, the engine time of the ops that ran as it
    (ms, share of the profiled total), whether it was kept in float; worst SQNR first, then time-only nodes slowest
    first. ``ids``: the graph's names → node ids; without it the layers' and kept nodes' own names are the nodes."""
    records = [r for r in (layer_error or {}).get("records", []) if r.get("sqnr_db") is not None]
    ids = {**{n: n for n in [r["name"] for r in records] + list(kept or [])}, **(ids or {})}
    rows: dict[str, dict[str, Any]] = {}
    for r in records:  # worst first: a node shows its worst tensor
        rows.setdefault(node_for(r["name"], ids) or r["name"], _row(r["name"], r["op"], r["sqnr_db"], r["clipped"]))
    for node, ops in ops_by_node(op_time or {}, ids).items():
        for key, group in ([(node, ops)] if node is not None else [(op["node"], [op]) for op in ops]):
            row = rows.setdefault(key, _row(key, "+".join(dict.fromkeys(op["op_type"] for op in group))))
            row["ms"] = (row["ms"] or 0.0) + sum(float(op["ms"]) for op in group)
            row["time_share"] = (row["time_share"] or 0.0) + sum(float(op["share"]) for op in group)
            row["engine_nodes"] += [op["node"] for op in group]
    for name in kept or []:
        rows.setdefault(node_for(name, ids) or name, _row(name, "?"))
    for key, row in rows.items():
        row["kept_float"] = None if kept is None else bool({key, row["node"]} & set(kept))
        row["ms"] = None if row["ms"] is None else round(row["ms"], 5)  # shares stay unrounded: they add up to ≤ 1
    return sorted(rows.values(), key=_worst_first)


def _row(node: str, op_type: str, sqnr_db: float | None = None, clipped: float | None = None) -> dict[str, Any]:
    return {"node": node, "op_type": op_type, "sqnr_db": sqnr_db, "clipped": clipped, "ms": None, "time_share": None,
            "kept_float": None, "engine_nodes": []}


def _worst_first(row: dict[str, Any]) -> tuple:
    if row["sqnr_db"] is not None:
        return 0, row["sqnr_db"], row["node"]
    return (1, -row["ms"], row["node"]) if row["ms"] is not None else (2, 0.0, row["node"])


def section(sources: dict[str, Sources], boards: list[dict[str, Any]], host: str) -> dict[str, dict[str, Any]] | None:
    """report.json's ``where``: each int8 artifact's joined rows and where each column came from, or why it is empty.
    ``boards``: parsed device results files, oldest first; a board's measured per-op table replaces the host's (the
    newest board wins), and the section names the machine whose figures it shows."""
    timed: dict[str, tuple[dict, str, str]] = {k: (s.op_time, "host", host) for k, s in sources.items() if s.op_time}
    for res in boards:
        for key, table in (res.get("op_time") or {}).items():
            if table.get("measured") or key not in timed or not timed[key][0].get("measured"):
                timed[key] = (table, "device", res["device"]["name"])
    out = {}
    for key in [*sources, *(k for k in timed if k not in sources)]:
        out[key] = artifact_section(key, sources.get(key) or Sources(), *timed.get(key, (None, None, None)))
    return out or None


def artifact_section(key: str, src: Sources, op_time: dict | None, where: str | None, machine: str | None) -> dict[str, Any]:
    kept, kept_said = kept_in_float(src.sidecar)
    error = src.layer_error or {}
    measured = bool(op_time and op_time.get("measured"))
    rows = join(error, op_time if measured else None, kept, src.ids)
    if error.get("records"):
        sqnr_missing = None
    else:
        sqnr_missing = error.get("error") or NO_LAYER_ERROR.get(key) or (
            "no layer_error.json beside the artifact (export.layer_error_images: 0, or exported before it existed)")
    if measured:
        time_missing = None
    else:
        time_missing = (op_time or {}).get("reason") or "not profiled (the benchmark did not time this artifact)"
    return {"artifact": key, "sqnr_file": error.get("file"), "sqnr_missing": sqnr_missing,
            "time_where": where if measured else None, "time_machine": machine if measured else None,
            "time_engine": (op_time or {}).get("engine"), "time_runs": (op_time or {}).get("runs") if measured else None,
            "total_ms": round(op_time["total_ms"], 5) if measured else None, "time_missing": time_missing,
            "kept_source": kept_said if kept is not None else None, "kept_missing": None if kept is not None else kept_said,
            "rows": rows}


def table(info: dict[str, Any], limit: int = SHOWN) -> tuple[list[str], list[list[str]]] | None:
    """The worst ``limit`` rows for report.md/html (None: no row)."""
    if not info["rows"]:
        return None
    headers = ["Node", "Op", "SQNR (dB)", "Clipped", "ms", "Share of time", "Kept in float"]
    return headers, [[r["node"] if r["node"].startswith("/") else short_name(r["node"]), r["op_type"], _f(r["sqnr_db"], ".1f"), _pct(r["clipped"]), _f(r["ms"], ".4f"),
                      _pct(r["time_share"], ".1f"), "—" if r["kept_float"] is None else "yes" if r["kept_float"] else "no"]
                     for r in info["rows"][:limit]]


def notes(info: dict[str, Any], limit: int = SHOWN) -> list[str]:
    """What the table shows and, for a column with nothing measured, why."""
    out = []
    if len(info["rows"]) > limit:
        out.append(f"The {limit} worst of {len(info['rows'])} nodes; {len(info['rows']) - limit} more in report.json.")
    if info["sqnr_missing"]:
        out.append(f"SQNR, clipped: NOT MEASURED: {info['sqnr_missing']}.")
    else:
        out.append(f"SQNR and clipped share: the export's per-layer error ({info['sqnr_file']}), the node's worst tensor.")
    if info["time_missing"]:
        out.append(f"ms, share of time: NOT MEASURED: {info['time_missing']}.")
    else:
        where = "on the host" if info["time_where"] == "host" else "on the device"
        out.append(f"ms: median per inference over {info['time_runs']} profiled runs, {info['time_engine']}'s per-op profile "
                   f"measured {where} {info['time_machine']} (total {info['total_ms']:.4f} ms, profiler overhead included: "
                   "read shares, the latency is the benchmark's); engine nodes joined to the graph node they start with"
                   + (f"; {FUSED}." if not info["sqnr_missing"] else "."))
    out.append(f"Kept in float: {info['kept_source']}." if info["kept_source"] else f"Kept in float: {info['kept_missing']}.")
    return out


def _f(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _pct(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else f"{100 * x:{spec}} %"
