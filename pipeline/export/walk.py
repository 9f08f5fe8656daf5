"""The format table walked in order: each wanted row's converter (``Format.converter``) called once with the wanted
keys that name it, after the converters of the formats it is made from. The export stage and the untrained check
(``pipeline/export/untrained.py``) both convert through here; no family is named."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pipeline.errors import PipelineError
from pipeline.export.common import Artifact, ExportInputs, ExportState, Pending
from pipeline.formats import FORMATS, get_format, resolve


def wanted_keys(requested: Iterable[str]) -> list[str]:
    """``requested`` plus the sources another converter makes (the ONNX every other format starts from), in table
    order; a source made by the same converter (tflite_fp32 for tflite_int8) is that converter's business."""
    wanted = set()
    for key in requested:
        wanted.add(key)
        fmt = get_format(key)
        while fmt.source in FORMATS:
            source = FORMATS[fmt.source]
            if source.converter != fmt.converter:
                wanted.add(source.key)
            fmt = source
    return [key for key in FORMATS if key in wanted]


def converters(requested: Iterable[str]) -> dict[str, list[str]]:
    """converter ("module:function") -> the wanted keys it makes, in the order of their first row."""
    groups: dict[str, list[str]] = {}
    for key in wanted_keys(requested):
        fmt = FORMATS[key]
        if not fmt.exported:
            raise PipelineError(f"export: {key} ({fmt.label}) is made after export; list {fmt.source} instead")
        if not fmt.converter:
            raise PipelineError(f"export: {key} ({fmt.label}) names no converter in the format table")
        groups.setdefault(fmt.converter, []).append(key)
    return groups


def export_formats(inputs: ExportInputs, state: ExportState, requested: Iterable[str],
                   meanwhile: Callable[[], object] | None = None) -> None:
    """Convert every requested format (and the sources it needs) into ``inputs.out``, each with its sidecar.

    A converter that hands back a ``Pending`` (onnx2tf in a child process) keeps running while the later ones convert
    and ``meanwhile`` runs; it is finished last, and waited for when anything before fails."""
    pending: list[Pending] = []
    try:
        for ref, keys in converters(requested).items():
            made = resolve(ref)(inputs, state, keys)
            if isinstance(made, list):
                _add(inputs, state, made)
            else:
                pending.append(made)
        if meanwhile is not None:
            meanwhile()
        for conversion in pending:
            _add(inputs, state, conversion.finish())
    finally:
        for conversion in pending:  # a failure above must not leave a child writing into the stage folder
            conversion.abandon()


def _add(inputs: ExportInputs, state: ExportState, made: list[Artifact]) -> None:
    for artifact in made:
        state.add(inputs, artifact)
