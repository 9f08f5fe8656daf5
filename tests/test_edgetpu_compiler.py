"""edgetpu_compiler integration: its log parsed from text in the format Coral documents, the call
made through a stand-in compiler on PATH, and the "not found" result that is never a silent skip."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

from pipeline.target.rules import CompileResult
from pipeline.target.edge_tpu_compiler import NOT_FOUND, compile_edgetpu, parse_compiler_log, parse_size

PARTIAL = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 1524 ms.

    Input model: student_int8.tflite
    Input size: 4.24MiB
    Output model: student_int8_edgetpu.tflite
    Output size: 5.57MiB
    On-chip memory used for caching model parameters: 4.21MiB
    On-chip memory remaining for caching model parameters: 3.29MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 267
    Operation log: student_int8_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
    Number of operations that will run on Edge TPU: 264
    Number of operations that will run on CPU: 3

    Operator                       Count      Status

    ADD                            42         Mapped to Edge TPU
    CUSTOM                         1          Operation is working on an unsupported data type
    RESHAPE                        10         Mapped to Edge TPU
    LEAKY_RELU                     2          Operation not supported
    CONV_2D                        212        Mapped to Edge TPU
    Compilation child process completed within timeout period.
    Compilation succeeded!
    """)

FULL_LOG_FILE = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Input: student_int8.tflite
    Output: student_int8_edgetpu.tflite

    Operator                       Count      Status

    QUANTIZE                       2          Mapped to Edge TPU
    CONV_2D                        9          Mapped to Edge TPU
    FULLY_CONNECTED                1          Mapped to Edge TPU
    """)

FULL_STDOUT = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 41 ms.

    Input model: student_int8.tflite
    Input size: 86.23KiB
    Output model: student_int8_edgetpu.tflite
    Output size: 171.55KiB
    On-chip memory used for caching model parameters: 81.00KiB
    On-chip memory remaining for caching model parameters: 7.79MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 12
    Operation log: student_int8_edgetpu.log
    See the operation log file for individual operation details.
    Compilation child process completed within timeout period.
    Compilation succeeded!
    """)

REFUSED = "Edge TPU Compiler version 15.0.340273435\nInvalid model: student_int8.tflite\nModel not quantized\n"


def test_sizes_in_the_compilers_units():
    assert parse_size("0.00B") == 0
    assert parse_size("66.00KiB") == 66 * 1024
    assert parse_size("4.21MiB") == round(4.21 * 2**20)
    assert parse_size("1.5GiB") == round(1.5 * 2**30)
    assert parse_size("n/a") is None


def test_partially_mapped_log():
    r = parse_compiler_log(PARTIAL)
    assert r["version"] == "16.0.384591198" and r["compile_ms"] == 1524.0
    assert r["input_model"] == "student_int8.tflite" and r["output_model"] == "student_int8_edgetpu.tflite"
    assert r["input_bytes"] == round(4.24 * 2**20) and r["output_bytes"] == round(5.57 * 2**20)
    assert r["on_chip_bytes_used"] == round(4.21 * 2**20) and r["on_chip_bytes_remaining"] == round(3.29 * 2**20)
    assert r["off_chip_bytes"] == 0 and r["subgraphs"] == 1
    assert (r["ops_total"], r["ops_mapped"], r["ops_cpu"]) == (267, 264, 3)
    assert [(o["op"], o["count"], o["mapped"]) for o in r["operators"]] == [
        ("ADD", 42, True), ("CUSTOM", 1, False), ("RESHAPE", 10, True), ("LEAKY_RELU", 2, False), ("CONV_2D", 212, True)]
    assert r["operators"][3]["status"] == "Operation not supported"
    assert r["errors"] == []


def test_fully_mapped_stdout_and_operation_log():
    r = parse_compiler_log(FULL_STDOUT)
    assert (r["ops_total"], r["ops_mapped"], r["ops_cpu"]) == (12, 12, 0)  # no "will run on" lines when all map
    assert r["on_chip_bytes_used"] == 81 * 1024 and r["operation_log"] == "student_int8_edgetpu.log"
    table = parse_compiler_log(FULL_LOG_FILE)["operators"]
    assert sum(o["count"] for o in table) == 12 and all(o["mapped"] for o in table)


def test_refused_model():
    r = parse_compiler_log(REFUSED)
    assert r["errors"] == ["Invalid model: student_int8.tflite", "Model not quantized"]
    assert r["ops_total"] is None and r["ops_mapped"] is None


def _fake_compiler(bin_dir, stdout: str, rc: int = 0, write_model: bool = True):
    """A stand-in edgetpu_compiler: prints ``stdout``, writes <stem>_edgetpu.tflite and .log into -o DIR."""
    copy = 'cp "$model" "$out/${stem}_edgetpu.tflite"' if write_model else ":"
    script = bin_dir / "edgetpu_compiler"
    script.write_text(
        "#!/bin/sh\n"
        'out=.; model=""\n'
        'while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift 2;; -s) shift;; *) model="$1"; shift;; esac; done\n'
        'stem=$(basename "$model" .tflite)\n'
        f"{copy}\n"
        f"cat > \"$out/${{stem}}_edgetpu.log\" <<'LOG'\n{FULL_LOG_FILE}LOG\n"
        f"cat <<'OUT'\n{stdout}OUT\n"
        f"exit {rc}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_compiles_with_the_compiler_on_path(tmp_path, monkeypatch):
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    _fake_compiler(bin_dir, FULL_STDOUT)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "student_int8.tflite"
    model.write_bytes(b"TFL3 stand-in")
    r = compile_edgetpu(model, out)
    assert r.status == "compiled" and r.compiled and r.model == "student_int8_edgetpu.tflite"
    assert (out / "student_int8_edgetpu.tflite").read_bytes() == model.read_bytes()
    assert (out / "edgetpu_compiler.log").read_text().startswith("Edge TPU Compiler version 16")
    assert (r.ops_total, r.ops_mapped, r.subgraphs) == (12, 12, 1)


def test_refusal_is_a_recorded_failure_not_an_exception(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_compiler(bin_dir, REFUSED, rc=1, write_model=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "student_int8.tflite"
    model.write_bytes(b"x")
    r = compile_edgetpu(model, tmp_path / "out")
    assert not r.compiled and r.status.startswith("failed: Invalid model") and "Model not quantized" in r.status


def test_missing_compiler_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    r = compile_edgetpu(tmp_path / "m.tflite", tmp_path / "out")
    assert r == CompileResult(status=NOT_FOUND, compiled=False) and not r.ran
    assert NOT_FOUND == "not compiled: edgetpu_compiler not found"


def test_relative_paths_work_although_the_compiler_runs_in_its_output_folder(tmp_path, monkeypatch):
    """A relative runs_dir (the default "runs") gives relative paths; the compiler's cwd is out_dir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_compiler(bin_dir, FULL_STDOUT)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    Path("run").mkdir()
    Path("run/student_int8.tflite").write_bytes(b"TFL3 stand-in")
    r = compile_edgetpu(Path("run/student_int8.tflite"), Path("run/out"))
    assert r.compiled and (tmp_path / "run" / "out" / "student_int8_edgetpu.tflite").read_bytes() == b"TFL3 stand-in"
