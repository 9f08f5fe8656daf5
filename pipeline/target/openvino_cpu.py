"""Intel / AMD x86 CPU with OpenVINO: the NNCF int8 IR (NCHW, float I/O, FakeQuantize inside) on the CPU plugin."""

from pipeline.target.checks import check_openvino
from pipeline.target.rules import TargetRules

RULES = TargetRules(
    name="openvino_cpu",
    description="x86 CPU, OpenVINO: NNCF int8 IR on the CPU plugin",
    per_channel=True,
    # other_weight_scheme stays False: no remedy of the deploy artifact (openvino_int8) tries another weight scheme, and
    # a tflite_int8 exported beside it is not deployed here, so trying its other scheme would only cost a conversion
    io_dtype="float32",
    layout="NCHW",
    deploy_artifact="openvino_int8",
    device="CPU",
    checker=check_openvino,
)
