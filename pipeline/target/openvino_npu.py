"""Intel NPU (Core Ultra) with OpenVINO: the same NNCF int8 IR, static shapes, on the NPU plugin.

The NPU plugin supports no dynamic shapes (docs.openvino.ai, "Supported Devices"), so the
IR keeps the export's batch-1 static shape. Where no NPU is present the IR is checked and
benchmarked on CPU and one line says so, pointing at openvino_cpu.yaml (``device.py``).
"""

from pipeline.target.checks import check_openvino
from pipeline.target.rules import TargetRules

RULES = TargetRules(
    name="openvino_npu",
    docker_devices=("/dev/accel",),  # Intel NPU driver
    description="Intel NPU (Core Ultra), OpenVINO: NNCF int8 IR on the NPU plugin",
    per_channel=True,
    # other_weight_scheme stays False: no remedy of the deploy artifact (openvino_int8) tries another weight scheme, and
    # a tflite_int8 exported beside it is not deployed here, so trying its other scheme would only cost a conversion
    io_dtype="float32",
    layout="NCHW",
    deploy_artifact="openvino_int8",
    device="NPU",
    accelerator="Intel NPU",
    checker=check_openvino,
    alternative="openvino_cpu.yaml",
)
