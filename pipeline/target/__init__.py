"""Hardware targets by name (``target.name``): each module holds one target's ``RULES``.

A new target is one module here (a ``TargetRules``, with its checker, its vendor compiler and its
board facts) plus one line below, and a recipe in ``targets/``. Rules modules stay import-light:
their checkers and compilers import toolchains only when called.
"""

from pipeline.errors import PipelineError
from pipeline.target import edge_tpu, openvino_cpu, openvino_npu, rpi4
from pipeline.target.rules import CompileResult, TargetRules, VendorCompiler

TARGETS: dict[str, TargetRules] = {m.RULES.name: m.RULES for m in (edge_tpu, rpi4, openvino_cpu, openvino_npu)}


def target_rules(target: str) -> TargetRules:
    """The rules of ``target``; an unknown name is a one-line error naming the known ones."""
    if target not in TARGETS:
        import difflib

        close = difflib.get_close_matches(target, list(TARGETS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise PipelineError(f"--target {target}: unknown (known: {', '.join(sorted(TARGETS))}){hint}")
    return TARGETS[target]


__all__ = ["TARGETS", "CompileResult", "TargetRules", "VendorCompiler", "target_rules"]
