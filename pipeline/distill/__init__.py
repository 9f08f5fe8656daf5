"""Distillation losses by name: ``distill.method`` in the config picks one.

A plain dict (timm's habit): to add a method, write a ``DistillLoss`` subclass in its own
module and add one line here; the contract tests pick it up with no test edits.
"""

from pipeline.distill.afd import AFDLoss
from pipeline.distill.ama import AMALoss
from pipeline.distill.at import ATLoss
from pipeline.distill.base import DistillLoss
from pipeline.distill.fitnet import FitNetLoss
from pipeline.distill.hmat import HMATLoss
from pipeline.distill.icc import ICCLoss
from pipeline.distill.kd import KDLoss, NoDistillLoss
from pipeline.distill.mhkd import MHKDLoss
from pipeline.distill.rtk import RTKLoss

LOSSES: dict[str, type[DistillLoss]] = {
    cls.name: cls
    for cls in (
        NoDistillLoss,
        KDLoss,
        ATLoss,
        FitNetLoss,
        AMALoss,
        MHKDLoss,
        AFDLoss,
        RTKLoss,
        HMATLoss,
        ICCLoss,
    )
}
