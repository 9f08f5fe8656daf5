"""Raspberry Pi 4 / 5 (Cortex-A72 / A76, 4 cores): TFLite int8 and fp32 in LiteRT with XNNPACK, 4 threads.

XNNPACK runs per-channel int8 and fp32 models on Arm NEON; LiteRT applies it by default (the
old tflite-runtime wheel does not for int8, ENVIRONMENT.md). int8 I/O keeps the model
full-integer end to end; the runner quantises the normalised float input itself.
"""

from pipeline.target.checks import check_tflite
from pipeline.target.rules import TargetRules

RULES = TargetRules(
    name="rpi4",
    image="edge-pipeline/rpi",
    description="Raspberry Pi 4/5: TFLite int8 and fp32, LiteRT + XNNPACK, 4 threads",
    per_channel=True,
    # TFLite's int8 spec makes per-axis conv weights optional: the builtin kernels and XNNPACK (QS8 per-tensor beside
    # QC8 per-channel) run per-tensor int8 weights too
    other_weight_scheme=True,
    io_dtype="int8",
    layout="NHWC",
    deploy_artifact="tflite_int8",
    device="CPU",
    threads=4,
    checker=check_tflite,
)
