"""What a hardware target demands of a model, as data the export, QAT, check and benchmark stages read.

One ``TargetRules`` per target, in its own module (``pipeline/target/<name>.py``); recipes in
``targets/`` name it with ``target.name``. A target is a plug-in: its module declares the rules,
the deploy format, its checker, its vendor compiler (a ``VendorCompiler`` whose call returns a
``CompileResult``) and its board facts (image, docker devices, delegate). Adding one means its
module, one line in ``pipeline/target/__init__.py`` and a recipe; the stages, the bundle, the
board runner and the report read only these fields (``tests/test_target_plugin.py`` does it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pipeline.stage_metrics import CompileResult  # the compiler's result is the target stage's metric

TURNED_OFF = "not compiled: target.compiler is off"  # the status of a compiler the recipe switched off


@dataclass(frozen=True)
class VendorCompiler:
    """A target's vendor compiler: ``compiler(deploy_artifact, out_dir) -> CompileResult``, never raising for a
    model it refuses (that is a finding). ``output_format`` keys the compiled model in bundles and device rows;
    ``output_glob`` finds one compiled outside the pipeline (``docker/compile``) in the target stage folder;
    ``check_import`` checks a compile made on another machine (``python -m pipeline target RUN --compiled DIR``):
    ``(folder, deploy artifact) -> ({name in the stage folder: source file}, CompileResult)``."""

    name: str  # what the console and the report call it
    compile: Callable[[Path, Path], CompileResult]
    output_format: str
    output_glob: str
    check_import: Callable[[Path, Path], tuple[dict[str, Path], CompileResult]] | None = None

    def __call__(self, model: Path, out_dir: Path) -> CompileResult:
        return self.compile(model, out_dir)


@dataclass(frozen=True)
class Delegate:
    """The TFLite delegate that runs a compiled model on the board, as the bundle tells the runner.

    ``library`` per ``platform.system()``; ``installed_glob`` finds the installed copies under /usr/lib and
    /usr/local/lib (recorded with the results); the hints finish the one-line error when it does not load
    (not installed / installed but no device or a mismatched build).
    """

    accelerator: str  # what the error line calls it when it does not load
    library: dict[str, str]
    installed_glob: str
    not_installed_hint: str
    not_loaded_hint: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# the check report's numbers the target stage's metrics carry (in this order), unless a target names its own
HEADLINE = ("verdict", "summary", "ops_total", "ops_mapped", "ops_cpu", "cpu_from", "parameter_bytes", "fits_on_chip",
            "fake_quantize_ops", "checked_on", "full_integer")


@dataclass(frozen=True)
class TargetRules:
    name: str
    description: str
    # quantisation scheme the target executes (QAT observers and int8 export follow it)
    per_channel: bool = True  # per-channel symmetric int8 weights; False = per-tensor
    # the target also executes the other weight scheme (per-tensor beside per-channel, or the reverse): an int8 that
    # misses the 99 % rule may be converted with it too (pipeline/export/tflite_recalibration.py); ``per_channel``
    # stays the first try. False where only ``per_channel``'s scheme is known to run
    other_weight_scheme: bool = False
    symmetric_weights: bool = True
    io_dtype: Literal["int8", "uint8", "float32"] = "int8"  # input/output tensors of the int8 artifact
    # every op must be int8 (a float op leaves the accelerator): export.keep_float is refused
    integer_only: bool = False
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    # which artifact represents "the deployed student" for gates and the report; its format row says the runtime
    deploy_artifact: str = "tflite_int8"  # a key of export.formats
    device: str = "CPU"  # runtime device (OpenVINO: CPU, NPU, GPU)
    threads: int = 0  # default benchmark thread count on the board, 0 = all cores
    # the accelerator the deploy artifact runs on (Edge TPU, NPU); None = the board's CPU. A host CPU
    # latency says nothing about an accelerator: without a device result the report says it was not measured
    accelerator: str | None = None
    # static check of the deployed artifact: (path, rules) -> JSON-able report with at least
    # verdict (str), passed (bool), summary (one line); see pipeline/target/checks.py
    checker: Callable[[Path, TargetRules], dict] | None = field(default=None, compare=False)
    headline: tuple[str, ...] = HEADLINE  # the checker's numbers the stage metrics (and the report) carry
    compiler: VendorCompiler | None = field(default=None, compare=False)  # called when installed (target.compiler: auto)
    # the board side: the docker/ image that runs the bundle (name without the version tag, which is
    # pipeline.device.remote's IMAGE_VERSION), the device nodes its accelerator needs in the container,
    # and the delegate the compiled model runs through
    image: str | None = None
    docker_devices: tuple[str, ...] = ()
    delegate: Delegate | None = None
    # the recipe to run instead when ``device`` is absent here (OpenVINO NPU -> openvino_cpu.yaml)
    alternative: str | None = None
    # arch prefix -> a variant this target runs fully, suggested when a model is refused
    friendly_archs: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def runtime(self) -> str:
        """The runtime that runs the deploy artifact on the device: the deploy format's row says it."""
        from pipeline.formats import runtime_of

        return runtime_of(self.deploy_artifact)

    def friendly_alternative(self, arch: str) -> str | None:
        """The variant to suggest for ``arch`` (longest matching prefix), None when there is none or it is itself."""
        prefix = max((p for p in self.friendly_archs if arch.startswith(p)), key=len, default=None)
        suggestion = self.friendly_archs.get(prefix) if prefix else None
        return suggestion if suggestion and suggestion != arch else None
