"""One writer per run folder: a second process is refused in one line naming the PID; a kill frees the folder.

The full two-runs case (a second `run` while the first trains; the first completes untouched) is the
"second run on one folder" row of tests/test_bad_inputs.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.__main__ import main
from pipeline.errors import PipelineError
from pipeline.lock import LOCK_FILE, run_lock

REPO = Path(__file__).resolve().parent.parent
HOLD = "import sys, time; from pipeline.lock import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/runs/tiny."""
    folder = tmp_path / "runs" / "tiny"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    yield proc, folder
    proc.kill()
    proc.wait()


def test_second_process_is_refused_in_one_line_naming_folder_and_pid(holder, tiny_recipe, capsys):
    proc, folder = holder
    assert main(["run", str(tiny_recipe), "--until", "data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {folder.resolve()}: in use by another run (PID {proc.pid}); wait for it to finish, "
                   "or give this run another name"]
    assert not (folder / "01_data").exists() and not (folder / "01_data.partial").exists()  # nothing touched


def test_a_killed_holder_frees_the_folder(holder):
    proc, folder = holder
    with pytest.raises(PipelineError, match=f"PID {proc.pid}"):
        with run_lock(folder):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / LOCK_FILE).read_text().strip() == str(proc.pid)  # the stale file stays; the kernel lock is gone
    with run_lock(folder):
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
    folder = tmp_path / "run"
    with run_lock(folder):
        with run_lock(folder):  # e.g. `device` merging into the report while it holds the folder
            pass
        child = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"), str(folder)],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
        assert child.returncode != 0 and f"in use by another run (PID {os.getpid()})" in child.stderr
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(60)", "pass"), str(folder)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout.strip() == "held" and time.monotonic() - started < 30
