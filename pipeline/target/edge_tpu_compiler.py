"""Run Coral's ``edgetpu_compiler`` when it is on PATH, and read its log into numbers.

The compiler (x86-64 Debian/Ubuntu, apt package ``edgetpu-compiler``; coral.ai/docs/edgetpu/compiler)
writes ``<stem>_edgetpu.tflite`` and ``<stem>_edgetpu.log`` into ``-o DIR``; ``-s`` also prints
the per-op table on stdout. Its report (version 16, format as Coral documents it)::

    Edge TPU Compiler version 16.0.384591198
    Model compiled successfully in 1524 ms.
    Input model: m.tflite
    Input size: 4.24MiB
    Output model: m_edgetpu.tflite
    Output size: 5.57MiB
    On-chip memory used for caching model parameters: 4.21MiB
    On-chip memory remaining for caching model parameters: 3.29MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 267
    Operation log: m_edgetpu.log
    Number of operations that will run on Edge TPU: 264
    Number of operations that will run on CPU: 3
    Operator                       Count      Status
    RESHAPE                        1          Operation is otherwise supported, but not mapped due to ...

and a refusal looks like ``Invalid model: m.tflite`` / ``Model not quantized``. There is no
machine-readable mode, so this module parses that text; a field it cannot find stays None.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from pipeline.child import run_child
from pipeline.target.rules import CompileResult

COMPILER = "edgetpu_compiler"
NOT_FOUND = f"not compiled: {COMPILER} not found"
OUTPUT_GLOB = "*_edgetpu.tflite"  # what it writes for <stem>.tflite
LOG_FILE = "edgetpu_compiler.log"

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_FIELDS = {  # log key -> (our key, kind)
    "Input model": ("input_model", str),
    "Input size": ("input_bytes", "size"),
    "Output model": ("output_model", str),
    "Output size": ("output_bytes", "size"),
    "On-chip memory used for caching model parameters": ("on_chip_bytes_used", "size"),
    "On-chip memory remaining for caching model parameters": ("on_chip_bytes_remaining", "size"),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_bytes", "size"),
    "Number of Edge TPU subgraphs": ("subgraphs", int),
    "Total number of operations": ("ops_total", int),
    "Number of operations that will run on Edge TPU": ("ops_mapped", int),
    "Number of operations that will run on CPU": ("ops_cpu", int),
    "Operation log": ("operation_log", str),
}
_ROW = re.compile(r"^([A-Za-z][\w\-]*)\s+(\d+)\s+(\S.*?)\s*$")
_ERRORS = ("Invalid model", "Model not quantized", "ERROR", "Internal compiler error", "Compilation failed", "error:")


def find_compiler() -> str | None:
    return shutil.which(COMPILER)


def parse_size(text: str) -> int | None:
    """'4.21MiB' -> 4414505, '0.00B' -> 0; None when it is not a size."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?i?B)\s*", text)
    if not m or m.group(2) not in _UNITS:
        return None
    return int(round(float(m.group(1)) * _UNITS[m.group(2)]))


def parse_compiler_log(text: str) -> dict:
    """Summary fields, the per-op table and error lines of the compiler's stdout and/or its .log file."""
    out: dict = {key: None for key, _ in _FIELDS.values()}
    out.update(version=None, compile_ms=None, operators=[], errors=[])
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("Edge TPU Compiler version"):
            out["version"] = stripped.removeprefix("Edge TPU Compiler version").strip()
            in_table = False
            continue
        if m := re.match(r"Model compiled successfully in ([\d.]+) ms", stripped):
            out["compile_ms"] = float(m.group(1))
            continue
        if re.match(r"^Operator\s+Count\s+Status$", stripped):
            in_table = True
            continue
        key, sep, value = stripped.partition(":")
        if sep and key in _FIELDS:
            name, kind = _FIELDS[key]
            value = value.strip()
            out[name] = parse_size(value) if kind == "size" else int(value) if kind is int else value
            in_table = False
            continue
        if in_table and (m := _ROW.match(stripped)):
            status = m.group(3)
            out["operators"].append({"op": m.group(1), "count": int(m.group(2)), "status": status,
                                     "mapped": status.startswith("Mapped to Edge TPU")})
            continue
        if any(stripped.startswith(e) for e in _ERRORS):
            out["errors"].append(stripped)
    rows = out["operators"]
    if rows and out["ops_cpu"] is None and not any("All other operators" in ln for ln in text.splitlines()):
        out["ops_cpu"] = sum(r["count"] for r in rows if not r["mapped"])
    if out["ops_total"] is not None:  # a fully mapped model prints no "will run on" lines
        if out["ops_cpu"] is None and out["ops_mapped"] is None and not out["errors"]:
            out["ops_cpu"] = 0
        if out["ops_mapped"] is None and out["ops_cpu"] is not None:
            out["ops_mapped"] = out["ops_total"] - out["ops_cpu"]
    return out


def compile_edgetpu(model: Path, out_dir: Path, timeout: float = 600) -> CompileResult:
    """Compile ``model`` into ``out_dir``; keep ``*_edgetpu.tflite``, the compiler's stdout and its .log.

    Returns ``status`` ("compiled" / "failed: ..." / NOT_FOUND), ``compiled`` and the parsed log.
    Never raises for a model the compiler refuses: that is a finding, recorded in the metrics.
    """
    exe = find_compiler()
    if exe is None:
        return CompileResult(status=NOT_FOUND, compiled=False)
    model, out_dir = Path(model).resolve(), Path(out_dir).resolve()  # absolute: the compiler runs in out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        proc = run_child([exe, "-s", "-o", str(out_dir), str(model)], cwd=out_dir, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=timeout)  # dies with the stage
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired:
        text, rc = f"timed out after {timeout:.0f} s", "timeout"
    (out_dir / LOG_FILE).write_text(text)
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    op_log = out_dir / f"{model.stem}_edgetpu.log"
    parsed = parse_compiler_log(text)
    if op_log.is_file() and not parsed["operators"]:  # stdout without -s support: the table is in the .log
        parsed["operators"] = parse_compiler_log(op_log.read_text(errors="replace"))["operators"]
    ok = rc == 0 and compiled.is_file()
    reason = "; ".join(parsed["errors"][:2]) or (text.strip().splitlines() or [f"exit status {rc}"])[-1]
    return CompileResult(status="compiled" if ok else f"failed: {reason[:300]} [exit {rc}]", compiled=ok,
                         model=compiled.name if ok else None, log=LOG_FILE, **parsed)
