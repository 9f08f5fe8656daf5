"""Which export format a file is, decided by the file: the one rule the runtimes, ``benchmark``'s given files and the
board runner share.

The suffix picks the rows that could be it; their detectors (``Format.detector``) are asked derived rows first
(reverse table order: a format's source comes before it, so the last row that claims a file is the most specific):
an int8 TFLite is one whose activations are integer (int8 weights alone are dynamic-range, a float model), not one
whose input happens to be; an IR is int8 with FakeQuantize nodes, fp16 with f16 constants. A sidecar is a hint written
beside the file, not proof: one that claims another family, int8-ness, or a format its detector refuses is one line.

Torch-free and toolchain-free at import time: boards import it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.formats import FORMATS, resolve


def suffixes() -> tuple[str, ...]:
    """.onnx, .tflite, .xml: the suffixes of the table's files, read at call time (a row added later counts)."""
    return tuple(dict.fromkeys(Path(f.file).suffix.lower() for f in FORMATS.values()))


def detect_format(path: Path) -> str:
    """The format key of ``path``: its content's, checked against its sidecar's claim when it has one."""
    from pipeline.formats.sidecar import read_sidecar, sidecar_path

    path = Path(path)
    known = suffixes()
    if path.suffix.lower() not in known:
        raise PipelineError(f"{path}: not an artifact the benchmark can run (known: {', '.join(known)}; a checkpoint goes to "
                            "python -m pipeline export)")
    if not path.is_file():
        raise PipelineError(f"{path}: no such file")
    found = format_from_content(path)
    sidecar = read_sidecar(path)
    claimed = sidecar.get("format") if sidecar else None
    if claimed not in FORMATS or claimed == found:
        return found
    said, is_ = FORMATS[claimed], FORMATS[found]
    if said.family != is_.family or (said.precision == "int8") != (is_.precision == "int8") or not _claims(said, path):
        kind = f"{is_.family} {'int8' if is_.precision == 'int8' else 'float'}"
        raise PipelineError(f"{path}: its sidecar {sidecar_path(path).name} says {claimed}, but the file is {kind} ({found}); "
                            "remove the sidecar or give the file it was written for")
    return found


def format_from_content(path: Path) -> str:
    """The most derived row of the file's suffix whose detector claims it (the sidecar not read)."""
    path = Path(path)
    stat = path.stat()
    return _from_content(str(path.resolve()), stat.st_mtime_ns, stat.st_size, tuple(FORMATS))


@lru_cache(maxsize=64)
def _from_content(path: str, _mtime_ns: int, _size: int, _rows: tuple[str, ...]) -> str:
    """Cached by the file's identity (and the table's rows): the board runner asks at every timed init, which must
    not pay a parse."""
    suffix = Path(path).suffix.lower()
    rows = [f for f in reversed(FORMATS.values()) if Path(f.file).suffix.lower() == suffix and f.detector]
    for fmt in rows:
        if _claims(fmt, Path(path)):
            return fmt.key
    raise PipelineError(f"{path}: none of the formats {', '.join(f.key for f in rows) or 'known'} recognises it")


def _claims(fmt, path: Path) -> bool:
    return bool(fmt.detector and resolve(fmt.detector)(path))


# ---- the rows' detectors: (path) -> bool, each asked only of files with its row's suffix ----

def any_file(path: Path) -> bool:
    """The family's first row: whatever no more specific row claims."""
    return True


def onnx_qdq(path: Path) -> bool:
    """QuantizeLinear nodes (onnx2qdq's QDQ model), read from the checked graph (not a byte search of the file)."""
    from pipeline.model_files import check_onnx

    return any(n.op_type == "QuantizeLinear" for n in check_onnx(path, str(path)).graph.node)


def tflite_integer(path: Path) -> bool:
    """Full-integer: activations are int8/uint8, whatever the input dtype (int8 weights alone = dynamic-range, float)."""
    graph = _tflite_graph(path)
    return any(not t.is_constant and t.dtype in ("int8", "uint8") for t in graph.tensors)


def edgetpu_compiled(path: Path) -> bool:
    """The Edge TPU compiler's output: named ``<stem>_edgetpu.tflite`` by it, or holding its custom op."""
    if path.name.lower().endswith("_edgetpu.tflite"):
        return True
    return any(op.is_custom and op.opcode_name == "edgetpu-custom-op" for op in _tflite_graph(path).ops)


def openvino_fake_quantize(path: Path) -> bool:
    return 'type="FakeQuantize"' in _ir_text(path)


def openvino_f16(path: Path) -> bool:
    return 'element_type="f16"' in _ir_text(path)


def _tflite_graph(path: Path):
    stat = path.stat()
    return _read_tflite(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _read_tflite(path: str, _mtime_ns: int, _size: int):
    """One parse for both TFLite detectors and a bundle's few models (the runner asks at each timed init)."""
    from pipeline.formats.tflite_graph import read_tflite

    return read_tflite(Path(path))


def _ir_text(path: Path) -> str:
    from pipeline.model_files import check_openvino_ir

    return check_openvino_ir(path, str(path))
