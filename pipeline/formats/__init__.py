"""The export formats: one record per format, which everything that names a format reads.

Like Ultralytics' ``export_formats()`` (read by both its exporter and its ``AutoBackend``), but
with named fields. The config's allowed ``export.formats``, the exporter's file names and
dispatch, the fidelity rule, the accuracy chain, the device bundle and the runtimes' inferred
format keys are all derived from ``FORMATS``. A row names its converter and its detector as
``"module:function"`` strings (resolved by ``resolve`` when used, so this table stays light): the
exporter and the untrained check walk the rows in order calling their converters
(``pipeline/export/walk.py``), and ``detect_format`` (``pipeline/formats/detect.py``) asks their
detectors. A new format is one row here plus a module with its converter and detector
(``tests/test_formats.py`` adds both at test time and checks that the rest follows).

Stdlib only: the config validator and the board-side runner import it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

EXPORT_SOURCE = "export_source"  # ``Format.source`` of a format made from the PyTorch weights themselves

FAMILIES = ("onnx", "tflite", "openvino")  # converters: torch2onnx + onnx2qdq, onnx2tflite, onnx2openvino
PRECISIONS = ("fp32", "fp16", "int8")
# fidelity rules (pipeline/export/fidelity.py): logits = top-1 agreement ≥ 99.9 % and logits within fp32_rtol;
# agreement = top-1 agreement ≥ 99 %; accuracy = int8 accuracy ≥ 99 % of the fp32 student's (MLPerf)
FIDELITY_RULES = ("logits", "agreement", "accuracy")


@dataclass(frozen=True)
class Format:
    key: str  # what recipes, artifacts.json, sidecars and reports call it
    file: str  # path inside the export stage folder (an OpenVINO IR's folder also holds its .bin)
    family: str  # the container: onnx (torch2onnx; int8 by onnx2qdq), tflite (onnx2tflite), openvino (onnx2openvino)
    precision: str  # fp32 | fp16 | int8: what the artifact computes in
    runtime: str  # Runtime.name of the engine that executes it (pipeline/runtimes), = a target's ``runtime``
    label: str  # for humans: accuracy chain rows, console
    source: str  # what it is made from: another format's key, or EXPORT_SOURCE (the PyTorch weights); its accuracy-chain parent
    fidelity: str  # the rule it is held to against PyTorch (FIDELITY_RULES)
    bundled: bool = True  # a board target whose runtime executes it gets it in its bundle (python -m pipeline bundle)
    # "module:function" (inputs, state, keys) -> artifact records (or a conversion still running), called once for
    # all the wanted rows that name it (pipeline/export/walk.py)
    converter: str = ""
    # "module:function" (path) -> bool: is this file (of this row's suffix) this format? Asked derived rows first
    detector: str = ""
    exported: bool = True  # the export stage makes it (listable in export.formats); False: made by a later stage
    delegate: str | None = None  # the runtime runs it only with this delegate (the Edge TPU's compiled model)


_ONNX, _QDQ = "pipeline.export.onnx_family:convert_onnx", "pipeline.export.qdq:convert_onnx_int8"
_TFLITE, _OPENVINO = "pipeline.export.tflite:convert_tflite", "pipeline.export.openvino:convert_openvino"
_DETECT = "pipeline.formats.detect:"
# the Edge TPU compiler's output (<stem>_edgetpu.tflite) of the int8 TFLite, made by the target stage, run with libedgetpu
EDGETPU = Format("tflite_edgetpu", "student_int8_edgetpu.tflite", "tflite", "int8", "tflite", "TFLite int8 compiled for the Edge TPU",
                 "tflite_int8", "accuracy", bundled=False, detector=_DETECT + "edgetpu_compiled", exported=False, delegate="edgetpu")
_ROWS = (
    Format("onnx", "student.onnx", "onnx", "fp32", "onnxruntime", "ONNX (ONNX Runtime)", EXPORT_SOURCE, "logits",
           converter=_ONNX, detector=_DETECT + "any_file"),
    # ONNX Runtime static quantisation (QDQ, per-channel int8 weights) of student.onnx: pipeline/export/onnx2qdq.py
    Format("onnx_int8", "student_int8.onnx", "onnx", "int8", "onnxruntime", "ONNX int8 QDQ (ONNX Runtime)", "onnx", "accuracy",
           converter=_QDQ, detector=_DETECT + "onnx_qdq"),
    # onnx2tf quantises the float TF graph it also writes as tflite_fp32: the int8 model's parent is that one
    Format("tflite_fp32", "student_fp32.tflite", "tflite", "fp32", "tflite", "TFLite fp32 (LiteRT)", "onnx", "logits",
           converter=_TFLITE, detector=_DETECT + "any_file"),
    Format("tflite_int8", "student_int8.tflite", "tflite", "int8", "tflite", "TFLite int8 (LiteRT)", "tflite_fp32", "accuracy",
           converter=_TFLITE, detector=_DETECT + "tflite_integer"),
    Format("openvino_fp32", "openvino_fp32/student.xml", "openvino", "fp32", "openvino", "OpenVINO fp32", "onnx", "logits",
           converter=_OPENVINO, detector=_DETECT + "any_file"),
    Format("openvino_fp16", "openvino_fp16/student.xml", "openvino", "fp16", "openvino", "OpenVINO fp16", "openvino_fp32", "agreement",
           converter=_OPENVINO, detector=_DETECT + "openvino_f16"),
    Format("openvino_int8", "openvino_int8/student.xml", "openvino", "int8", "openvino", "OpenVINO int8", "openvino_fp32", "accuracy",
           converter=_OPENVINO, detector=_DETECT + "openvino_fake_quantize"),
    EDGETPU,
)
FORMATS: dict[str, Format] = {f.key: f for f in _ROWS}  # in export order: a format's source comes before it


def resolve(ref: str) -> Any:
    """The function a row names as ``"module:function"``, imported now (the table itself imports nothing)."""
    module, _, name = ref.partition(":")
    if not module or not name:
        raise ValueError(f"'{ref}': a converter or detector is named 'module:function'")
    return getattr(importlib.import_module(module), name)


def get_format(key: str) -> Format:
    """The record of ``key``; an unknown key is an error naming the known ones, never a default."""
    try:
        return FORMATS[key]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(key), list(FORMATS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise KeyError(f"unknown export format '{key}' (known: {', '.join(FORMATS)}){hint}") from None


def format_keys(*, family: str | None = None, runtime: str | None = None, bundled: bool | None = None,
                exported: bool | None = None, among=None) -> list[str]:
    """Format keys in table order, filtered by family / runtime / bundled / exported, and kept to ``among`` when given."""
    for name, value, known in (("family", family, FAMILIES), ("runtime", runtime, runtimes())):
        if value is not None and value not in known:
            raise KeyError(f"unknown {name} '{value}' (known: {', '.join(known)})")
    wanted = None if among is None else set(among)
    return [f.key for f in FORMATS.values()
            if (family is None or f.family == family) and (runtime is None or f.runtime == runtime)
            and (bundled is None or f.bundled == bundled) and (exported is None or f.exported == exported)
            and (wanted is None or f.key in wanted)]


def runtimes() -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.runtime for f in FORMATS.values()))


def primary(*, precision: str, family: str | None = None, runtime: str | None = None) -> str:
    """The first format of a family (or runtime) with that precision: the key a converter's output, or a file
    read without a sidecar (an .tflite with integer I/O, an IR with FakeQuantize nodes), is given."""
    found = [k for k in format_keys(family=family, runtime=runtime) if FORMATS[k].precision == precision]
    if not found:
        raise KeyError(f"no {precision} export format for {'family' if family else 'runtime'} '{family or runtime}'")
    return found[0]


def file_of(key: str) -> str:
    return get_format(key).file


def precision_of(key: str) -> str:
    return get_format(key).precision


def runtime_of(key: str) -> str:
    return get_format(key).runtime


def source_of(key: str) -> str:
    return get_format(key).source
