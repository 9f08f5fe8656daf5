"""A converter dies with the stage: SIGKILL of the pipeline during onnx2tf leaves no process and no temp folder.

onnx2tf is replaced by a stand-in module (first on the child's PYTHONPATH) that starts a grandchild,
as the real one starts onnxsim, and then works for a minute; the pipeline side is the real
``onnx2tflite``, run in a process the test kills.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAKE_ONNX2TF = """
import os, subprocess, time
def convert(**kwargs):
    sleeper = subprocess.Popen(["sleep", "60"])
    with open("pids.txt", "w") as f:
        f.write(f"{os.getpid()} {sleeper.pid}\\n")
    time.sleep(60)
"""
PIPELINE_SIDE = """
import sys
import numpy as np
from pipeline.export.onnx2tflite import onnx2tflite
onnx2tflite(sys.argv[1], sys.argv[2], np.zeros((4, 1, 8, 8), np.float32))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead, only not yet reaped
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_during_conversion_leaves_no_child_and_no_temp_folder(tmp_path, tiny_student):
    from pipeline.export.torch2onnx import torch2onnx

    onnx = torch2onnx(tiny_student, (1, 8, 8), tmp_path / "student.onnx")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "onnx2tf.py").write_text(FAKE_ONNX2TF)
    partial = tmp_path / "05_export.partial"
    temp_before = set(Path(tempfile.gettempdir()).glob("*onnx2tf*"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO), os.environ.get("PYTHONPATH", "")])}
    stage = subprocess.Popen([sys.executable, "-c", PIPELINE_SIDE, str(onnx), str(partial)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (pids := list(partial.glob(".onnx2tf-*/pids.txt"))) or not pids[0].read_text().endswith("\n"):
            assert stage.poll() is None and time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.1)
        driver, grandchild = map(int, pids[0].read_text().split())
        assert os.getpgid(driver) == driver != os.getpgid(stage.pid)  # its own process group
        assert pids[0].parent.parent == partial  # the work folder is inside the stage's .partial
        stage.send_signal(signal.SIGKILL)
        stage.wait()
        deadline = time.monotonic() + 10
        while (_alive(driver) or _alive(grandchild)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(driver) and not _alive(grandchild)
    finally:
        stage.kill()
        for pid in locals().get("driver", None), locals().get("grandchild", None):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert set(Path(tempfile.gettempdir()).glob("*onnx2tf*")) == temp_before  # nothing leaked outside the stage


def test_a_timeout_kills_the_whole_group(tmp_path):
    from pipeline.child import run_child

    script = ("import subprocess, time\nsleeper = subprocess.Popen(['sleep', '60'])\n"
              "open('pid', 'w').write(str(sleeper.pid))\ntime.sleep(60)\n")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_child([sys.executable, "-c", script], cwd=tmp_path, timeout=3)
    assert time.monotonic() - started < 30
    grandchild = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_a_background_child_runs_at_the_lowest_priority_and_others_do_not(tmp_path):
    import os
    import subprocess
    import sys

    from pipeline.child import BACKGROUND_NICENESS, background_children, run_child

    ask = [sys.executable, "-c", "import os; print(os.nice(0))"]
    own = os.nice(0)
    with background_children():
        low = run_child(ask, cwd=tmp_path, stdout=subprocess.PIPE, text=True).stdout
    normal = run_child(ask, cwd=tmp_path, stdout=subprocess.PIPE, text=True).stdout
    assert int(low) == min(own + BACKGROUND_NICENESS, 19) and int(normal) == own
