"""Distillation methods by name, without torch: the loss class each names (imported when a loss is built),
its default loss weights (the published ones unless they hurt) and its options model.

The light half of the registry: config validation reads names, options and default weights from
here; ``pipeline.distill.LOSSES`` imports the loss classes themselves, which take their ``defaults``
and ``Options`` from this table (``DistillLoss.__init_subclass__``). A new method is one line here
plus its ``DistillLoss`` subclass (and its options model in ``options.py`` if it takes any).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from pipeline.distill import options as o


@dataclass(frozen=True)
class Method:
    loss: str  # "module:Class", imported only when a loss is built
    defaults: dict[str, float]  # w_ce, w_kd, w_feat when the config leaves them unset
    Options: type[BaseModel] = o.NoOptions
    # The paper's weights where the default differs: published weights that made the student worse than
    # training it alone in benchmarks/distill_methods.py (two datasets, 3 seeds); set them to reproduce the paper.
    published: dict[str, float] | None = None


METHODS: dict[str, Method] = {
    "none": Method("pipeline.distill.kd:NoDistillLoss", {"w_ce": 1.0, "w_kd": 0.0, "w_feat": 0.0}),
    "kd": Method("pipeline.distill.kd:KDLoss", {"w_ce": 0.1, "w_kd": 0.9, "w_feat": 0.0}),
    "at": Method("pipeline.distill.at:ATLoss", {"w_ce": 1.0, "w_kd": 0.0, "w_feat": 100.0}, o.ATOptions,
                 published={"w_ce": 1.0, "w_kd": 0.0, "w_feat": 1000.0}),
    "fitnet": Method("pipeline.distill.fitnet:FitNetLoss", {"w_ce": 1.0, "w_kd": 0.0, "w_feat": 100.0}, o.FitNetOptions),
    "ama": Method("pipeline.distill.ama:AMALoss", {"w_ce": 0.1, "w_kd": 0.9, "w_feat": 10.0}, o.AMAOptions),
    "mhkd": Method("pipeline.distill.mhkd:MHKDLoss", {"w_ce": 0.0, "w_kd": 1.0, "w_feat": 1.0}, o.MHKDOptions),
    "afd": Method("pipeline.distill.afd:AFDLoss", {"w_ce": 1.0, "w_kd": 0.9, "w_feat": 200.0}, o.AFDOptions),
    "rtk": Method("pipeline.distill.rtk:RTKLoss", {"w_ce": 1.0, "w_kd": 0.9, "w_feat": 200.0}, o.RTKOptions),
    # HMAT's published term weights (β 1000, λp 1000, λc 300, no KD) are reachable through its options
    "hmat": Method("pipeline.distill.hmat:HMATLoss", {"w_ce": 1.0, "w_kd": 0.9, "w_feat": 1.0}, o.HMATOptions,
                   published={"w_ce": 1.0, "w_kd": 0.0, "w_feat": 1.0}),
    "icc": Method("pipeline.distill.icc:ICCLoss", {"w_ce": 0.1, "w_kd": 0.9, "w_feat": 1.0}, o.ICCOptions),
}
