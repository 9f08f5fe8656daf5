"""OpenVINO Cores that die out of order leave the thread a freed signal stack; the pipeline keeps one Core and guards NNCF.

The hazard, reproduced in a child process: two Cores that load the CPU plugin, destroyed in creation order, then a
Python-handled signal (SIGCHLD, as torch's DataLoader installs, when a child exits) kills the process with SIGSEGV.
The same steps inside ``alternate_stack_kept()`` finish.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pipeline.runtimes.openvino_core import core, current_alternate_stack

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack is asked through Linux's libc")

SCRIPT = textwrap.dedent("""
    import contextlib, gc, signal, subprocess, sys
    import numpy as np, openvino as ov, openvino.opset13 as ops
    from pipeline.runtimes.openvino_core import alternate_stack_kept

    def loaded():
        p = ops.parameter([1, 4], np.float32)
        c = ov.Core()
        return c, c.compile_model(ov.Model([ops.relu(p)], [p]), "CPU")

    with (alternate_stack_kept() if sys.argv[1] == "guarded" else contextlib.nullcontext()):
        a = loaded()
        b = loaded()
        del a; gc.collect()
        del b; gc.collect()
    signal.signal(signal.SIGCHLD, lambda *_: None)
    subprocess.run(["true"])
    print("alive")
""")


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)


TRIES = 5  # the bare crash is a use after free: most runs crash, one may not (the freed stack still mapped)


def test_cores_dying_out_of_order_crash_the_next_handled_signal_unless_guarded():
    bare = [_run("bare") for _ in range(TRIES)]
    crashed = [b for b in bare if b.returncode == -signal.SIGSEGV and "alive" not in b.stdout]
    assert crashed, [b.returncode for b in bare]  # the hazard, as OpenVINO 2026.4 has it
    for _ in range(TRIES):  # guarded, none of as many runs crashes
        guarded = _run("guarded")
        assert guarded.returncode == 0 and guarded.stdout.strip() == "alive", guarded.stderr[-500:]


def test_one_core_per_process_and_nncf_leaves_the_signal_stack_as_it_found_it():
    from pipeline.export.onnx2openvino import quantize_openvino

    import openvino as ov
    import openvino.opset13 as ops

    assert core() is core()
    before = current_alternate_stack()
    p = ops.parameter([1, 2, 4, 4], np.float32)
    weights = ops.constant(np.random.default_rng(0).standard_normal((3, 2, 1, 1)).astype(np.float32))
    model = ov.Model([ops.relu(ops.convolution(p, weights, [1, 1], [0, 0], [0, 0], [1, 1]))], [p])
    quantized = quantize_openvino(model, np.random.default_rng(1).standard_normal((8, 2, 4, 4)).astype(np.float32))
    assert any(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    assert current_alternate_stack() == before
