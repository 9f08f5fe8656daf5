"""Distillation losses by name: ``distill.method`` in the config picks one.

A plain dict (timm's habit): to add a method, write a ``DistillLoss`` subclass in its own
module and add one line here; the contract tests pick it up with no test edits.
"""

from pipeline.distill.at import ATLoss
from pipeline.distill.base import DistillLoss
from pipeline.distill.fitnet import FitNetLoss
from pipeline.distill.kd import KDLoss, NoDistillLoss

LOSSES: dict[str, type[DistillLoss]] = {
    cls.name: cls
    for cls in (
        NoDistillLoss,
        KDLoss,
        ATLoss,
        FitNetLoss,
    )
}
