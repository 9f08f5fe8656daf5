"""Coral Edge TPU (USB Accelerator, Dev Board, M.2/PCIe): full-integer int8 TFLite, compiled by edgetpu_compiler.

Requirements from coral.ai/docs/edgetpu/models-intro: every tensor 8-bit quantised with
constant sizes, batch 1 (at most 3 dims above 1), only the supported ops (``edgetpu_ops``).
Per-channel int8 weights are what TF 2.x's converter writes and compiler 16 accepts; uint8
I/O is the Coral examples' convention (camera frames arrive as uint8). The compiled model
runs through LiteRT with the libedgetpu delegate (``pipeline/device/edgetpu.py``).
"""

from pipeline.target.edgetpu_check import check_edgetpu
from pipeline.target.rules import TargetRules

RULES = TargetRules(
    name="edge_tpu",
    image="edge-pipeline/coral",
    docker_devices=("/dev/bus/usb",),  # Coral USB Accelerator (PCIe/M.2 Coral: /dev/apex_0)
    description="Coral Edge TPU: full-integer int8 TFLite, compiled by edgetpu_compiler",
    per_channel=True,
    io_dtype="uint8",
    layout="NHWC",
    deploy_artifact="tflite_int8",
    runtime="tflite",
    accelerator="Edge TPU",
    checker=check_edgetpu,
    compiler="edgetpu_compiler",
    # hard-swish and squeeze-excite models -> their Edge TPU variants (ReLU, no SE; benchmarks/edgetpu_models.py)
    friendly_archs={
        "timm:mobilenetv3_small": "timm:tf_mobilenetv3_small_minimal_100",
        "timm:tf_mobilenetv3_small": "timm:tf_mobilenetv3_small_minimal_100",
        "timm:mobilenetv3_large": "timm:tf_mobilenetv3_large_minimal_100",
        "timm:tf_mobilenetv3_large": "timm:tf_mobilenetv3_large_minimal_100",
        "torchvision:mobilenet_v3_small": "timm:tf_mobilenetv3_small_minimal_100",
        "torchvision:mobilenet_v3_large": "timm:tf_mobilenetv3_large_minimal_100",
    },
)
