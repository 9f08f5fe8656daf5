"""`import pipeline` and the stage/runtime modules stay light: no toolchain at import time, no torch in runtimes.

Run in a fresh interpreter each, since this test session has imported everything already.
"""

import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "openvino", "onnx2tf", "ai_edge_litert", "nncf", "onnxruntime", "onnx", "tf_keras")


def _loaded_after(statement: str, watched: tuple[str, ...]) -> list[str]:
    code = f"{statement}\nimport sys\nprint(','.join(m for m in {watched!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return [m for m in done.stdout.strip().split(",") if m]


def test_pipeline_config_run_export_and_runtimes_import_no_toolchain():
    statement = "import pipeline, pipeline.config, pipeline.run, pipeline.export.stage, pipeline.runtimes"
    assert _loaded_after(statement, HEAVY) == []


@pytest.mark.parametrize(
    "module",
    [
        "pipeline.runtimes",
        "pipeline.runtimes.base",
        "pipeline.runtimes.onnx_rt",
        "pipeline.runtimes.tflite_rt",
        "pipeline.runtimes.openvino_rt",
        "pipeline.export.sidecar",
        "pipeline.export.tflite_graph",
    ],
)
def test_board_side_modules_import_without_torch(module):
    """The on-device runner imports these on boards that have numpy and a TFLite runtime but no torch."""
    assert _loaded_after(f"import {module}", ("torch",) + HEAVY) == []
