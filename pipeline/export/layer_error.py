"""Where does the int8 model lose accuracy? Every quantised tensor against its fp32 counterpart, per layer.

The int8 TFLite and the fp32 TFLite come out of one onnx2tf conversion, so they are the same
graph: every activation of the int8 model has an fp32 twin with the same op names (the
converter only renumbers the constants fused into a name, ``…;Const_21`` → ``…;Const_211``,
so those parts are dropped before matching). Both run on the same calibration images with all
intermediate tensors kept; each int8 tensor is dequantised with its own (scale, zero point)
and compared with its twin over all images at once:

* SQNR (dB) = 10·log10(Σ ref² / Σ (ref − deq)²): the signal-to-quantisation-noise ratio; an
  8-bit uniform quantiser of a full-range signal gives ≈ 40 dB, < 20 dB means the layer's
  error is a tenth of its signal (the measure of TF's QuantizationDebugger and of
  Nagel et al. 2021, "A White Paper on Neural Network Quantization").
* relative error = ‖ref − deq‖₂ / ‖ref‖₂ (= 10^(−SQNR/20)).
* cosine similarity of ref and deq (flattened): a direction check, blind to scale.
* clipped: share of fp32 values outside the int8 tensor's representable range (its calibrated
  range was too narrow), which tells clipping from rounding.

Errors accumulate through the graph, so a layer's number includes what its inputs brought;
the first layer whose SQNR falls well below its predecessors' is where it breaks. Both
interpreters run without delegates (XNNPACK would fuse away the intermediates).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, printable

LAYER_ERROR_FILE = "layer_error.json"
MAX_IMAGES = 32  # calibration images compared: enough for stable SQNR, cheap next to the conversion


@dataclass(frozen=True)
class LayerError:
    name: str  # the tensor's name in the TFLite graph, fused constants left out
    op: str  # TFLite op that writes it (CONV_2D, ADD, …), "input" for the graph input
    shape: list[int]  # NHWC for 4-D tensors, as the TFLite graph holds them
    index: int  # position of the writing op in execution order (-1: graph input), to find it in a graph viewer
    sqnr_db: float | None  # None when the fp32 tensor is all zeros
    rel_error: float | None
    cosine: float | None  # None when either tensor is all zeros
    clipped: float  # share of fp32 values outside the int8 tensor's range
    scale: float | None  # the int8 tensor's (first) scale; None for a float tensor compared as well (OpenVINO's logits)
    zero_point: int | None


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float | None:
    """10·log10(Σ ref² / Σ (ref − got)²); inf for an exact match, None when ref is all zeros."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return _from_sums(float((ref * ref).sum()), float(((ref - got) ** 2).sum()))[0]


def cosine(ref: np.ndarray, got: np.ndarray) -> float | None:
    ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    den = float(np.linalg.norm(ref) * np.linalg.norm(got))
    return float(ref @ got) / den if den > 0 else None


def _from_sums(signal: float, noise: float) -> tuple[float | None, float | None]:
    """(SQNR dB, relative error) from Σ ref² and Σ (ref − got)²."""
    if signal <= 0:
        return None, None
    if noise <= 0:
        return float("inf"), 0.0
    return float(10 * np.log10(signal / noise)), float(np.sqrt(noise / signal))


def compare_tensors(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float | None]]:
    """{name: (fp32, dequantised int8)} → {name: {sqnr_db, rel_error, cosine}}: the arithmetic, without any graph."""
    out = {}
    for name, (ref, got) in pairs.items():
        acc = _Sums()
        acc.add(np.asarray(ref), np.asarray(got), None)
        out[name] = acc.result()
    return out


def worst_first(layers: list[LayerError]) -> list[LayerError]:
    """Lowest SQNR first; layers without a number (all-zero fp32 tensor) last, then by execution order."""
    return sorted(layers, key=lambda r: (r.sqnr_db is None, r.sqnr_db if r.sqnr_db is not None else 0.0, r.index))


CHILD_TIMEOUT_S = 600


def layer_errors(int8_path: Path, fp32_path: Path, images: np.ndarray, max_images: int = MAX_IMAGES) -> list[LayerError]:
    """Per-layer error of ``int8_path`` against ``fp32_path`` (one onnx2tf conversion) on ``images``, worst first.

    ``images``: float32 N×C×H×W, normalised (the calibration set); the first ``max_images`` are used.
    The interpreters run in a child process (``python -m pipeline.export.layer_error``): LiteRT's
    keep-every-tensor mode is a debugging mode, and a crash there costs the run only this diagnosis.
    """
    import json
    import subprocess
    import sys
    import tempfile

    from pipeline.child import run_child

    images = np.asarray(images, dtype=np.float32)[:max_images]
    if images.ndim != 4 or len(images) == 0:
        raise PipelineError(f"layer error: images must be a non-empty N×C×H×W array, got shape {images.shape}")
    with tempfile.TemporaryDirectory(prefix="layer-error-") as tmp:
        np.save(Path(tmp) / "images.npy", images)
        argv = [sys.executable, "-m", "pipeline.export.layer_error", str(Path(int8_path).resolve()),
                str(Path(fp32_path).resolve()), str(Path(tmp) / "images.npy"), str(Path(tmp) / "layers.json")]
        try:
            done = run_child(argv, cwd=Path(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"layer error: the comparison took over {CHILD_TIMEOUT_S} s and was stopped") from None
        if done.returncode != 0:
            last = (done.stderr or "").strip().splitlines()
            why = f"killed by signal {-done.returncode}" if done.returncode < 0 else (last[-1] if last else f"exit {done.returncode}")
            raise PipelineError(f"layer error: the comparison process failed ({why})")
        return [LayerError(**r) for r in json.loads((Path(tmp) / "layers.json").read_text())]


def _layer_errors_here(int8_path: Path, fp32_path: Path, images: np.ndarray) -> list[LayerError]:
    """``layer_errors``' work, in this process (the child's side)."""
    from pipeline.formats.tflite_graph import read_tflite

    nhwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    q_model, f_model = _Model(int8_path), _Model(fp32_path)
    writers = _writers(read_tflite(int8_path))
    pairs = _pair(q_model, f_model)
    if not pairs:
        raise PipelineError(f"layer error: no tensor of {Path(int8_path).name} has a twin in {Path(fp32_path).name} "
                            "(not from the same onnx2tf conversion?)")
    sums = {q: _Sums() for q in pairs}
    for x in nhwc:
        q_model.invoke(x[None])
        f_model.invoke(x[None])
        for q, f in pairs.items():
            detail = q_model.details[q]
            raw = q_model.interpreter.get_tensor(q)
            sums[q].add(f_model.interpreter.get_tensor(f), _dequantize(raw, detail), detail)
    records = []
    for q, acc in sums.items():
        d = q_model.details[q]
        op, index = writers.get(q, ("input", -1))
        scales, zeros = d["quantization_parameters"]["scales"], d["quantization_parameters"]["zero_points"]
        records.append(LayerError(name=_key(d["name"]), op=op, shape=[int(s) for s in d["shape"]], index=index,
                                  **acc.result(), clipped=acc.clipped_share(), scale=float(scales[0]),
                                  zero_point=int(zeros[0]) if len(zeros) else 0))
    return worst_first(records)


def summary(layers: list[LayerError], images: int, top: int = 10) -> dict:
    """What ``layer_error.json`` holds: the worst layer in one line, then every layer worst first."""
    worst = next((r for r in layers if r.sqnr_db is not None), None)
    return {
        "images": images,
        "layers": len(layers),
        "worst": None if worst is None else {"name": worst.name, "op": worst.op, "sqnr_db": _finite(worst.sqnr_db)},
        "top": top,
        "records": [{**asdict(r), "sqnr_db": _finite(r.sqnr_db)} for r in layers],
    }


def _finite(v: float | None) -> float | None:
    """JSON has no infinity: an exact match is written as 999 dB."""
    return None if v is None else min(round(v, 3), 999.0)


class _Model:
    """One TFLite interpreter that keeps every intermediate tensor, no delegate."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        with warnings.catch_warnings():  # "intended for debugging purposes only": that is what this is
            warnings.simplefilter("ignore")
            self.interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                                           experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interpreter.allocate_tensors()
        self.details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        self.input = self.interpreter.get_input_details()[0]
        self.constants = _constant_indices(path)

    def invoke(self, x: np.ndarray) -> None:
        dtype = np.dtype(self.input["dtype"])
        if dtype.kind in "iu":
            from pipeline.runtimes.base import quantize

            scale, zero = self.input["quantization"]
            x = quantize(x, scale, zero, dtype)
        self.interpreter.set_tensor(self.input["index"], x.astype(dtype, copy=False))
        self.interpreter.invoke()


def _writers(graph) -> dict[int, tuple[str, int]]:
    """Tensor index → (op that writes it, its position); a QUANTIZE that only requantises another op's output (the
    uint8 output cast) is named after that op, "FULLY_CONNECTED+QUANTIZE", since that is the layer the number is about."""
    found: dict[int, tuple[str, int]] = {}
    for op in graph.ops:
        name = op.opcode_name
        if name == "QUANTIZE" and op.inputs and op.inputs[0].index in found:
            name = f"{found[op.inputs[0].index][0]}+QUANTIZE"
        for t in op.outputs:
            found[t.index] = (name, op.index)
    return found


def _constant_indices(path: Path) -> set[int]:
    from pipeline.formats.tflite_graph import read_tflite

    return {t.index for t in read_tflite(path).tensors if t.is_constant}


def _key(name: str) -> str:
    """A tensor name without the constants fused into it: the same in the fp32 and the int8 file."""
    from pipeline.formats.layer_names import layer_key

    return layer_key(name)


def _pair(q_model: _Model, f_model: _Model) -> dict[int, int]:
    """int8 tensor index → fp32 tensor index, for every quantised activation with a float twin of the same name and
    shape. A name that occurs more than once is paired in order; requantisation copies (``tfl.quantize``, the output
    before its uint8 cast) have no twin and are left out."""
    def activations(model: _Model, quantised: bool) -> dict[tuple, list[int]]:
        found: dict[tuple, list[int]] = {}
        for i, d in sorted(model.details.items()):
            if i in model.constants or not d["name"]:
                continue
            is_q = len(d["quantization_parameters"]["scales"]) > 0 and np.dtype(d["dtype"]).kind in "iu"
            if is_q != quantised or (not quantised and np.dtype(d["dtype"]).kind != "f"):
                continue
            found.setdefault((_key(d["name"]), tuple(int(s) for s in d["shape"])), []).append(i)
        return found

    q_found, f_found = activations(q_model, True), activations(f_model, False)
    return {q: f for key, qs in q_found.items() for q, f in zip(qs, f_found.get(key, []))}


def _dequantize(raw: np.ndarray, detail: dict) -> np.ndarray:
    params = detail["quantization_parameters"]
    scales, zeros = np.asarray(params["scales"], np.float64), np.asarray(params["zero_points"], np.float64)
    if scales.size > 1:  # per-channel (weights; activations are per-tensor): broadcast along the quantised axis
        shape = [1] * raw.ndim
        shape[int(params["quantized_dimension"])] = -1
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return (raw.astype(np.float64) - zeros) * scales


class _Sums:
    """Running sums over images, so a tensor's error is pooled over all of them without keeping the tensors."""

    def __init__(self):
        self.signal = self.noise = self.dot = self.got2 = 0.0
        self.clipped = self.count = 0

    def add(self, ref: np.ndarray, got: np.ndarray, detail: dict | None) -> None:
        ref, got = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
        if ref.shape != got.shape:
            raise PipelineError(f"layer error: tensor shapes differ ({ref.shape} vs {got.shape})")
        self.signal += float(ref @ ref)
        self.noise += float(((ref - got) ** 2).sum())
        self.dot += float(ref @ got)
        self.got2 += float(got @ got)
        self.count += ref.size
        if detail is not None:
            info, params = np.iinfo(detail["dtype"]), detail["quantization_parameters"]
            scales, zeros = np.asarray(params["scales"], np.float64), np.asarray(params["zero_points"], np.float64)
            lo, hi = float(((info.min - zeros) * scales).min()), float(((info.max - zeros) * scales).max())
            step = float(scales.min())
            self.clipped += int(((ref < lo - step / 2) | (ref > hi + step / 2)).sum())

    def result(self) -> dict[str, float | None]:
        sqnr, rel = _from_sums(self.signal, self.noise)
        den = np.sqrt(self.signal * self.got2)
        return {"sqnr_db": sqnr, "rel_error": rel, "cosine": float(self.dot / den) if den > 0 else None}

    def clipped_share(self) -> float:
        return self.clipped / self.count if self.count else 0.0


def write_layer_error(int8_path: Path, reference: Path, images: np.ndarray, export_dir: Path, max_images: int = MAX_IMAGES,
                      top: int = 10, compare=None) -> dict:
    """``layer_error.json`` beside ``int8_path`` (every layer, worst first) and the export metrics' summary (the ``top``
    worst), paths relative to ``export_dir``. ``compare(int8_path, reference, images)`` → the records: by default
    ``layer_errors`` (an int8 .tflite against its fp32 twin); OpenVINO's is ``layer_error_openvino.openvino_layer_errors``.

    Never raises: a diagnosis that cannot run is recorded as ``error`` and must not cost the run its artifacts."""
    from pipeline.artifacts import atomic_write_json
    from pipeline.errors import one_line

    int8_path, export_dir = Path(int8_path), Path(export_dir)
    out = int8_path.parent / LAYER_ERROR_FILE
    used = min(len(images), max_images)
    base = {"file": _inside(out, export_dir), "artifact": _inside(int8_path, export_dir),
            "reference": _inside(Path(reference), export_dir), "images": used}
    try:
        layers = (compare or layer_errors)(int8_path, reference, np.asarray(images, np.float32)[:max_images])
    except Exception as exc:  # noqa: BLE001 - a diagnosis, not a product: one line instead of a failed stage
        return {**base, "error": f"{type(exc).__name__}: {one_line(exc, 300)}"}
    doc = {**base, **summary(layers, used, top)}
    atomic_write_json(out, doc)
    return {**{k: v for k, v in doc.items() if k != "records"}, "records": doc["records"][:top]}


def _inside(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (the export stage's), or its bare name when it lies elsewhere."""
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else path.name


def _main(argv: list[str]) -> int:
    """The child: INT8 FP32 IMAGES.npy OUT.json → the records, worst first, as JSON; a PipelineError is one line, exit 2."""
    import json
    import sys

    int8_path, fp32_path, images_path, out = argv
    try:
        layers = _layer_errors_here(Path(int8_path), Path(fp32_path), np.load(images_path, allow_pickle=False))
    except PipelineError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 2
    Path(out).write_text(json.dumps([asdict(r) for r in layers]))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
