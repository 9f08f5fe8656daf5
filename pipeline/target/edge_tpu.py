"""Coral Edge TPU (USB Accelerator, Dev Board, M.2/PCIe): full-integer int8 TFLite, compiled by edgetpu_compiler.

Requirements from coral.ai/docs/edgetpu/models-intro: every tensor 8-bit quantised with
constant sizes, batch 1 (at most 3 dims above 1), only the supported ops (``edge_tpu_ops``).
Per-channel int8 weights are what TF 2.x's converter writes and compiler 16 accepts; the compiler
takes per-tensor int8 weights as well (TF 1.x's converter wrote only those), so an int8 that misses
the 99 % rule may be converted with per-tensor weights too (``other_weight_scheme``); uint8
I/O is the Coral examples' convention (camera frames arrive as uint8). The compiled model
(``tflite_edgetpu``) runs through LiteRT with the libedgetpu delegate, which the bundle names
for the board runner (``pipeline/device/delegate.py``).
"""

from pipeline.formats import get_format
from pipeline.target.edge_tpu_check import HEADLINE, check_edgetpu
from pipeline.target.rules import Delegate, TargetRules, VendorCompiler

ACCELERATOR = "Edge TPU"
COMPILED_FORMAT = get_format("tflite_edgetpu").key  # its row in the format table: the key in bundles and device rows


def _compile(model, out_dir):
    from pipeline.target.edge_tpu_compiler import compile_edgetpu

    return compile_edgetpu(model, out_dir)


def _check_import(folder, model):
    from pipeline.target.edge_tpu_import import check_compiled

    return check_compiled(folder, model)


RULES = TargetRules(
    name="edge_tpu",
    image="edge-pipeline/coral",
    docker_devices=("/dev/bus/usb",),  # Coral USB Accelerator (PCIe/M.2 Coral: /dev/apex_0)
    delegate=Delegate(
        accelerator=ACCELERATOR,
        library={"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"},
        installed_glob="libedgetpu.so*",
        not_installed_hint="libedgetpu is not installed (use the docker/coral image, or install libedgetpu1-std)",
        not_loaded_hint=("no Edge TPU visible (plugged in? container started with --device /dev/bus/usb?) "
                         "or a libedgetpu built for another TFLite version (see docker/README.md)"),
    ),
    description="Coral Edge TPU: full-integer int8 TFLite, compiled by edgetpu_compiler",
    per_channel=True,
    other_weight_scheme=True,  # edgetpu_compiler accepts per-tensor int8 weights too (see above)
    io_dtype="uint8",
    integer_only=True,
    layout="NHWC",
    deploy_artifact="tflite_int8",
    accelerator=ACCELERATOR,
    checker=check_edgetpu,
    headline=HEADLINE,
    compiler=VendorCompiler(name="edgetpu_compiler", compile=_compile, output_format=COMPILED_FORMAT,
                            output_glob="*_edgetpu.tflite", check_import=_check_import),
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
