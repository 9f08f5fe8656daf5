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
        "pipeline.formats.sidecar",
        "pipeline.formats.tflite_graph",
    ],
)
def test_board_side_modules_import_without_torch(module):
    """The on-device runner imports these on boards that have numpy and a TFLite runtime but no torch."""
    assert _loaded_after(f"import {module}", ("torch",) + HEAVY) == []


def _show_in_fresh_interpreter(recipe: str) -> tuple[int, str, list[str]]:
    code = ("import contextlib, io, sys\nfrom pipeline.__main__ import main\nout = io.StringIO()\n"
            f"with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n    rc = main(['show', {recipe!r}])\n"
            "print(rc)\nprint(out.getvalue().splitlines()[-1] if out.getvalue() else '')\n"
            "print(','.join(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rc, last, loaded = (done.stdout.splitlines() + ["", "", ""])[:3]
    return int(rc), last, [m for m in loaded.split(",") if m]


def test_show_validates_a_recipe_without_torch():
    """`python -m pipeline show` checks arch, method, options, dataset and target by name: no torch."""
    rc, _, loaded = _show_in_fresh_interpreter("targets/edge_tpu.yaml")
    assert rc == 0 and loaded == []


def test_a_bad_config_is_answered_without_torch(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {dataset: digitz}\ndistill: {method: kdd}\n")
    code = f"from pipeline.config import load_config\ntry:\n    load_config({str(bad)!r})\nexcept Exception as e:\n    print(e)"
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    message, torch_loaded = done.stdout.strip().splitlines()
    assert "digitz" in message and torch_loaded == "False"
