"""Where an int8 model loses accuracy and time, on its graph: node data for Google's Model Explorer.

Each int8 artifact's per-layer error (``layer_error.json``: SQNR in dB, worst first) and, where the engine
measured it, its per-op time become Model Explorer *node data* files (one metric per file, keyed by the node ids
its adapter gives the graph), which ``python -m pipeline explore RUN`` opens on the model:

- ``tflite_int8``: the ``.tflite`` itself through the built-in flatbuffer adapter, whose op nodes are the op
  indices, the ``index`` layer_error.json records. LiteRT measures no per-op time (``runtimes.op_time``).
- ``openvino_int8``: Model Explorer has no OpenVINO IR adapter, so the overlay goes on ``student.onnx`` (the graph
  the IR was converted from; the OpenVINO per-layer error already names its layers after its nodes), through the
  ONNX adapter (``model-explorer-onnx``, whose node ids are the ONNX node names).
- ``onnx_int8``: ``student_int8.onnx`` through the ONNX adapter: per-op time only (no per-layer error yet).

An engine's node (a fused kernel, ``/conv1/Conv/WithoutBiases``, ``/relu/Relu_output_0_nchwc``) is put on the
graph node whose name or output tensor it starts with, the longest such; one that matches none is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_json

# low SQNR is bad: red at the worst layer, green at the best (Model Explorer spreads stops over the values' range)
SQNR_GRADIENT = [{"stop": 0, "bgColor": "#d7301f"}, {"stop": 0.5, "bgColor": "#fdcc8a"}, {"stop": 1, "bgColor": "#a1d99b"}]
MS_GRADIENT = [{"stop": 0, "bgColor": "#ffffff"}, {"stop": 1, "bgColor": "#6a51a3"}]


def graph_nodes(model: Path) -> tuple[str, dict[str, str]]:
    """The graph id Model Explorer's adapter gives ``model`` and {name or output tensor: node id} for matching."""
    if model.suffix == ".tflite":
        from pipeline.formats.tflite_graph import read_tflite

        graph = read_tflite(model)
        ids = {t.name: str(op.index) for op in graph.ops for t in op.outputs}
        return "main", ids
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    ids = {i.name: f"[value] {i.name}" for i in graph.input}  # the ONNX adapter draws each graph input as a node
    for node in graph.node:
        ids[node.name] = node.name
        ids.update({output: node.name for output in node.output})
    return graph.name, ids


def node_for(name: str, ids: dict[str, str]) -> str | None:
    """The graph node an engine's node name belongs to: exact, else the longest name or tensor it starts with."""
    if name in ids:
        return ids[name]
    prefix = max((k for k in ids if k and name.startswith(k)), key=len, default=None)
    return ids[prefix] if prefix else None


def sqnr_results(layer_error: dict[str, Any], model: Path, ids: dict[str, str]) -> dict[str, dict[str, float]]:
    """{node id: {"value": SQNR dB}}; on a .tflite the op index is the node id, elsewhere the layer's name."""
    results = {}
    for record in layer_error.get("records", []):
        if record.get("sqnr_db") is None:
            continue
        node = str(record["index"]) if model.suffix == ".tflite" and record.get("index", -1) >= 0 else node_for(record["name"], ids)
        if node is not None and node not in results:  # records are worst first: a node shows its worst tensor
            results[node] = {"value": round(float(record["sqnr_db"]), 3)}
    return results


def ops_by_node(op_time: dict[str, Any], ids: dict[str, str]) -> dict[str | None, list[dict[str, Any]]]:
    """The profiled engine ops grouped by the graph node each ran as (``node_for``; key None: it matched none). The one
    place engine nodes meet graph nodes: the overlay here and the report's "where accuracy and time go" table."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for op in op_time.get("ops", []) if op_time.get("measured") else []:
        groups.setdefault(node_for(op["node"], ids), []).append(op)
    return groups


def ms_results(op_time: dict[str, Any], ids: dict[str, str]) -> dict[str, dict[str, float]]:
    """{node id: {"value": ms per inference}}, the engine's nodes that ran as one graph node added together."""
    return {node: {"value": round(sum(float(op["ms"]) for op in ops), 5)}
            for node, ops in ops_by_node(op_time, ids).items() if node is not None}


def write_node_data(out: Path, key: str, model: Path, layer_error: dict | None, op_time: dict | None) -> dict[str, Path]:
    """``<key>.sqnr.json`` and/or ``<key>.ms.json`` in ``out`` (Model Explorer's node-data format); what was written."""
    graph_id, ids = graph_nodes(model)
    metrics = {"sqnr": ("SQNR (dB)", sqnr_results(layer_error or {}, model, ids), SQNR_GRADIENT),
               "ms": ("time (ms)", ms_results(op_time or {}, ids), MS_GRADIENT)}
    written = {}
    for metric, (label, results, gradient) in metrics.items():
        if results:
            path = out / f"{key}.{metric}.json"
            atomic_write_json(path, {graph_id: {"name": f"{key} {label}", "results": results, "gradient": gradient}})
            written[metric] = path
    return written


def overlay_model(export_dir: Path, listed: dict[str, str], key: str) -> Path:
    """The model file the overlay of artifact ``key`` is drawn on: itself, or for an OpenVINO IR (no Model Explorer
    adapter) the ONNX model it was converted from, following the format table's ``source`` chain."""
    from pipeline.formats import FORMATS

    while FORMATS[key].family == "openvino":
        key = FORMATS[key].source
    return export_dir / listed[key]


def open_viewer(model: Path, node_data: list[Path], *, port: int, browser: bool) -> None:
    """Start Model Explorer's server on ``model`` with the overlays (blocks until Ctrl-C, as its own CLI does)."""
    import model_explorer

    config = model_explorer.config().add_model_from_path(str(model))
    for path in node_data:
        config.add_node_data_from_path(str(path))
    extensions = ["model_explorer_onnx"] if model.suffix == ".onnx" else []  # the ONNX adapter is an extension
    model_explorer.visualize_from_config(config, port=port, extensions=extensions, no_open_in_browser=not browser)


INT8_KEYS = ("tflite_int8", "openvino_int8", "onnx_int8")  # the artifacts an overlay is written for
EXPLORE_FOLDER = "explore"  # in the run folder: the command's own files, never a stage's


def _measured_in_run(run_dir: Path, key: str) -> dict | None:
    """The benchmark stage's per-op time of ``key`` (``07_benchmark/op_time.json``), when it profiled it."""
    from pipeline.artifacts import read_json_file
    from pipeline.stages import OP_TIME_FILE, stage_folder

    path = stage_folder(run_dir, "benchmark") / OP_TIME_FILE
    table = read_json_file(path, "re-run the benchmark stage (--from benchmark)").get(key) if path.is_file() else None
    return table if table and table.get("measured") else None


def prepare(run_dir: Path, key: str | None = None, *, op_time_runs: int = 20) -> tuple[Path, dict[str, Path]]:
    """The model to open for artifact ``key`` (default: the first int8 artifact exported) and its node data, written
    into ``RUN/explore/``: SQNR from the export's ``layer_error.json``, ms per node as the run's benchmark stage profiled it
    (``07_benchmark/op_time.json``), else measured now on this machine."""
    import numpy as np

    from pipeline.artifacts import read_artifacts, read_json_file
    from pipeline.errors import PipelineError
    from pipeline.export.layer_error import LAYER_ERROR_FILE
    from pipeline.runtimes.op_time import op_times
    from pipeline.stages import CALIBRATION_FILE, stage_folder

    export_dir = stage_folder(run_dir, "export")
    listed = read_artifacts(export_dir, remedy="finish the export stage first (python -m pipeline run <recipe> --until export)")
    int8 = [k for k in INT8_KEYS if k in listed]
    if key is None:
        if not int8:
            raise PipelineError(f"{run_dir}: no int8 artifact exported (exported: {', '.join(listed)}); nothing to explore")
        key = int8[0]
    elif key not in int8:
        raise PipelineError(f"--artifact {key}: not an int8 artifact of {run_dir} (int8 ones: {', '.join(int8) or 'none'})")
    artifact = export_dir / listed[key]
    error_file = artifact.parent / LAYER_ERROR_FILE
    layer_error = read_json_file(error_file, "re-run the export stage (--from export)") if error_file.is_file() else None
    op_time = _measured_in_run(run_dir, key)
    calibration = stage_folder(run_dir, "data") / CALIBRATION_FILE
    if op_time is None and calibration.is_file():  # not profiled by the run's benchmark stage: measured now, here
        op_time = op_times(artifact, np.load(calibration, allow_pickle=False)[:8], threads=1, runs=op_time_runs)
    out = Path(run_dir) / EXPLORE_FOLDER
    out.mkdir(exist_ok=True)
    model = overlay_model(export_dir, listed, key)
    return model, write_node_data(out, key, model, layer_error, op_time)
