"""Hardware targets by name (``target.name``): each module holds one target's ``RULES``.

A new target whose formats already exist is one module here (a ``TargetRules``) plus one
line below, and a recipe in ``targets/``. Rules modules stay import-light: their checkers
import toolchains only when called.
"""

from pipeline.target import edge_tpu, openvino_cpu, openvino_npu, rpi4
from pipeline.target.rules import TargetRules

TARGETS: dict[str, TargetRules] = {m.RULES.name: m.RULES for m in (edge_tpu, rpi4, openvino_cpu, openvino_npu)}

__all__ = ["TARGETS", "TargetRules"]
