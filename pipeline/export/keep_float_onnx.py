"""``export.keep_float`` on the ONNX Runtime QDQ path: ``quantize_static(nodes_to_exclude=…)``.

Patterns are searched in the node names of the model ORT quantises (``quant_pre_process``'s, which keeps
``student.onnx``'s names: ``/stage0/conv/Conv``). ``auto`` ranks the compute nodes by the SQNR lost at the quantised
tensors each one writes or reads (the plain QDQ model against fp32, on a few calibration images; ``sqnr_lost``): a node
where a tensor is crushed is tried first, not the deepest one, whose SQNR carries every error above it. Then ``choose_float_layers`` picks the fewest, judged by ORT top-1 on validation.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pipeline.decision import accuracy
from pipeline.export.keep_float import choose_float_layers, most_lost_first, pattern_record, sqnr_lost
from pipeline.export.onnx2qdq import prepare, quantize_prepared

MECHANISM = "onnxruntime.quantization.quantize_static(nodes_to_exclude=…)"
COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat")  # the nodes auto may keep in float
RANK_IMAGES = 16  # calibration images the candidates are ranked on


def qdq_keep_float(onnx_path: Path, out_path: Path, calibration: np.ndarray, keep_float, per_channel: bool,
                   validation: tuple[np.ndarray, np.ndarray] | None) -> dict:
    """Write the QDQ model of ``onnx_path`` with ``keep_float`` (patterns, or "auto" judged on ``validation``) left
    in float to ``out_path``; return the record for the sidecar and the metrics."""
    import onnx

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".qdq-") as work:
        prepared = prepare(onnx_path, Path(work) / "prepared.onnx")
        names = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node]
        if keep_float == "auto" and validation is None:
            record = {"mode": "auto", "mechanism": MECHANISM, "kept": [],
                      "reason": "no validation split to judge int8 on: nothing kept in float"}
        elif keep_float == "auto":
            record = _auto(prepared, Path(work), calibration, validation, per_channel)
        else:
            record = pattern_record(list(keep_float), names, MECHANISM)
        quantize_prepared(prepared, out_path, calibration, per_channel=per_channel, nodes_to_exclude=record["kept"],
                          name=Path(onnx_path).name)
    source = {n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    renamed = [n for n in record["kept"] if n not in source]
    if renamed:  # quant_pre_process named them: recorded, so nobody looks for them in student.onnx
        record["not_in_source_model"] = renamed
    record["float_weights"] = float_weight_nodes(out_path, record["kept"])
    return record


def _auto(prepared: Path, work: Path, calibration: np.ndarray, validation, per_channel: bool) -> dict:
    """``choose_float_layers`` with ORT: candidates ranked by SQNR, each try quantised again and judged on validation."""
    x, y = (np.asarray(a) for a in validation)
    plain = quantize_prepared(prepared, work / "plain.onnx", calibration, per_channel=per_channel)
    fp32_acc, plain_hits = ort_top1(prepared, x, y), ort_hits(plain, x, y)

    def score(kept: list[str]) -> np.ndarray:
        tried = quantize_prepared(prepared, work / "try.onnx", calibration, per_channel=per_channel, nodes_to_exclude=kept)
        return ort_hits(tried, x, y)

    record = choose_float_layers(lambda: rank_nodes(prepared, plain, calibration[:RANK_IMAGES]), score, fp32_acc,
                                 plain_hits, MECHANISM)
    if "candidates" in record:
        record["ranked_by"] = (f"most median per-channel SQNR lost at the quantised tensors a node writes or reads (plain QDQ vs fp32, "
                               f"{min(len(calibration), RANK_IMAGES)} calibration images)")
    return record


def rank_nodes(fp32_path: Path, qdq_path: Path, images: np.ndarray) -> list[tuple[str, float | None]]:
    """The QDQ model's compute nodes, worst first: (name, the most SQNR lost (``sqnr_lost``, on the median per-channel
    SQNR ``channel_sqnr_db``) among the quantised tensors it writes or reads); nodes next to no measured tensor
    follow in graph order (None)."""
    import onnx

    q_model, f_model = onnx.load(str(qdq_path)), onnx.load(str(fp32_path))
    q, f = q_model.graph, f_model.graph
    f_tensors = {o for n in f.node for o in n.output} | {i.name for i in f.input}
    dq_of = {n.input[0]: n.output[0] for n in q.node if n.op_type == "DequantizeLinear"}
    pairs = {n.input[0]: dq_of[n.output[0]] for n in q.node
             if n.op_type == "QuantizeLinear" and n.output[0] in dq_of and n.input[0] in f_tensors}
    f_out, q_out = _run(f_model, list(pairs), images), _run(q_model, list(pairs.values()), images)
    producer = {o: n for n in q.node for o in n.output}
    lost = sqnr_lost({t: channel_sqnr_db(f_out[t], q_out[dq]) for t, dq in pairs.items()},
                     lambda t: list(producer[t].input) if t in producer else [])
    worst: dict[str, float | None] = {}
    for t in most_lost_first(lost):
        near = [_compute_above(t, producer)] + [n.name for n in q.node if pairs[t] in n.input and n.op_type in COMPUTE]
        for name in near:
            if name is not None and name not in worst:
                worst[name] = lost[t]
    rest = [(n.name, None) for n in q.node if n.op_type in COMPUTE and n.name not in worst]
    return list(worst.items()) + rest


def channel_sqnr_db(refs: list[np.ndarray], gots: list[np.ndarray]) -> float | None:
    """The median over channels (axis 1) of each channel's SQNR in dB, pooled over images: a per-tensor SQNR hides
    a tensor whose one outlier channel crushes the others (its signal is all in that channel)."""
    ref = np.stack([np.asarray(r, np.float64) for r in refs])
    got = np.stack([np.asarray(g, np.float64) for g in gots])
    if ref.shape != got.shape:
        return None
    axes = tuple(i for i in range(ref.ndim) if i != 2) if ref.ndim > 2 else None  # images × batch × channels × …
    signal, noise = (ref ** 2).sum(axis=axes), ((ref - got) ** 2).sum(axis=axes)
    live = np.atleast_1d(signal) > 0
    if not live.any():
        return None
    ratio = np.atleast_1d(signal)[live] / np.maximum(np.atleast_1d(noise)[live], 1e-30)
    return float(np.median(np.minimum(10 * np.log10(ratio), 100.0)))


def _compute_above(tensor: str, producer: dict, steps: int = 8) -> str | None:
    """The compute node that wrote ``tensor``, through activations, reshapes and QDQ pairs (ORT folds a ReLU away)."""
    for _ in range(steps):
        node = producer.get(tensor)
        if node is None:
            return None
        if node.op_type in COMPUTE:
            return node.name
        tensor = node.input[0]
    return None


def _run(source, tensors: list[str], images: np.ndarray) -> dict[str, list[np.ndarray]]:
    """``tensors`` of the ONNX ``source`` model (made its outputs, in a copy) on each image, by ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(source)
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for image in np.asarray(images, np.float32):
        for t, value in zip(tensors, session.run(tensors, {name: image[None]})):
            got[t].append(value)
    return got


def ort_top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 of an ONNX model on float32 N×C×H×W ``x`` by ONNX Runtime's CPU provider."""
    return accuracy(ort_hits(path, x, y))


def ort_hits(path: Path, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image correctness of an ONNX model on float32 N×C×H×W ``x`` by ONNX Runtime's CPU provider (a static
    batch is filled)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0]
    step = image.shape[0] if isinstance(image.shape[0], int) and image.shape[0] > 0 else 256
    hits = []
    for i in range(0, len(x), step):
        batch = np.asarray(x[i : i + step], np.float32)
        filled = np.concatenate([batch, np.repeat(batch[-1:], step - len(batch), 0)]) if len(batch) < step else batch
        hits.extend(session.run(None, {image.name: filled})[0][: len(batch)].argmax(1) == y[i : i + step])
    return np.asarray(hits, bool)


def float_weight_nodes(qdq_path: Path, names: list[str]) -> list[str]:
    """Of ``names``, the nodes whose weights the saved QDQ model keeps float (no DequantizeLinear feeds them)."""
    import onnx

    graph = onnx.load(str(qdq_path), load_external_data=False).graph
    initialisers = {i.name for i in graph.initializer}
    wanted = set(names)
    return [n.name for n in graph.node if n.name in wanted and len(n.input) > 1 and n.input[1] in initialisers]
