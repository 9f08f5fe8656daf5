"""Check a Coral Edge TPU compile made on another machine against a run, before the pipeline records it.

``edgetpu_compiler`` exists only for x86-64 Linux, so users compile elsewhere (``docker/compile``, or
``edgetpu_compiler -s -o DIR student_int8.tflite``) and bring back ``DIR`` holding ``<stem>_edgetpu.tflite`` and
``<stem>_edgetpu.log`` (Coral's operation log), optionally with the compiler's stdout saved as
``edgetpu_compiler.log`` (the summary: on-chip / off-chip memory, subgraphs). ``<stem>`` is the stem of the run's
deploy artifact. The names (compiled file, the logs' ``Input:`` lines) must be that model's, the compiled file must
be a TFLite flatbuffer holding an ``edgetpu-custom-op`` with its input/output shapes and dtypes. The op split is the
logs', except that a compiled file holding more ops outside its ``edgetpu-custom-op`` than the logs put on the CPU
is counted from the file (a warning line says so). ``pipeline.target.compiled`` records what this returns.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import PipelineError, one_line
from pipeline.target.edge_tpu_compiler import LOG_FILE, parse_compiler_log
from pipeline.target.rules import CompileResult

CUSTOM_OP = "edgetpu-custom-op"  # what the compiler replaces each mapped subgraph with
_INPUT = re.compile(r"^\s*Input(?: model)?:\s*(\S.*?)\s*$", re.MULTILINE)  # "Input:" (.log) / "Input model:" (stdout)


def check_compiled(folder: Path, model: Path) -> tuple[dict[str, Path], CompileResult]:
    """The files to copy ({name in 06_target: source}) and the parsed compile; a one-line error for anything
    that is not ``edgetpu_compiler``'s output for ``model``."""
    redo = f"compile {model} with: edgetpu_compiler -s -o DIR {model.name} (or docker/compile), then pass that DIR"
    if not folder.is_dir():
        raise PipelineError(f"--compiled {folder}: no such folder; {redo}")
    compiled_name, log_name = f"{model.stem}_edgetpu.tflite", f"{model.stem}_edgetpu.log"
    found = sorted(p.name for p in folder.glob("*_edgetpu.tflite"))
    if compiled_name not in found:
        if not found:
            raise PipelineError(f"{folder}: no *_edgetpu.tflite in it; {redo}")
        raise PipelineError(f"{folder / found[0]}: compiled from {found[0].removesuffix('_edgetpu.tflite')}.tflite, "
                            f"not this run's {model.name} (expected {compiled_name}); {redo}")
    compiled, op_log, stdout = folder / compiled_name, folder / log_name, folder / LOG_FILE
    if not op_log.is_file():
        raise PipelineError(f"{op_log}: missing (the compiler writes it beside {compiled_name}); copy it too, or {redo}")
    texts = {op_log: _text(op_log)}
    if stdout.is_file():
        texts[stdout] = _text(stdout)
    for path, text in texts.items():
        named = [Path(m.replace("\\", "/")).name for m in _INPUT.findall(text)]
        if not named:
            raise PipelineError(f"{path}: names no input model (no 'Input:' line): not an edgetpu_compiler log; {redo}")
        if any(n != model.name for n in named):
            raise PipelineError(f"{path}: a log for {named[0]}, not this run's {model.name}; {redo}")
    subgraphs, cpu_in_file = _check_flatbuffer(compiled, model, redo)

    parsed = parse_compiler_log(texts.get(stdout, texts[op_log]))
    if not parsed["operators"]:
        parsed["operators"] = parse_compiler_log(texts[op_log])["operators"]
    parsed["version"] = parsed["version"] or parse_compiler_log(texts[op_log])["version"]
    rows = parsed["operators"]
    if rows and parsed["ops_total"] is None:  # only the .log: its table is the op split
        parsed["ops_total"] = sum(r["count"] for r in rows)
        parsed["ops_cpu"] = sum(r["count"] for r in rows if not r["mapped"])
        parsed["ops_mapped"] = parsed["ops_total"] - parsed["ops_cpu"]
    if parsed["subgraphs"] is None:
        parsed["subgraphs"] = subgraphs
    if cpu_in_file > (parsed["ops_cpu"] or 0):  # a log that claims more on the Edge TPU than the file holds: the file decides
        import sys

        from pipeline.errors import printable

        print(f"warning: {printable(op_log)}: says {parsed['ops_cpu'] or 0} op(s) run on the CPU, but {compiled_name} holds "
              f"{cpu_in_file} op(s) outside the {CUSTOM_OP}; counted from the compiled file (was the log edited or from "
              "another compile?)", file=sys.stderr)
        parsed["ops_cpu"] = cpu_in_file
        if parsed["ops_total"] is not None:
            parsed["ops_mapped"] = max(parsed["ops_total"] - cpu_in_file, 0)
    files = {compiled_name: compiled, log_name: op_log, **({LOG_FILE: stdout} if stdout.is_file() else {})}
    result = CompileResult(status="compiled", compiled=True, model=compiled_name,
                           log=LOG_FILE if stdout.is_file() else log_name, **parsed)
    return files, result


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({one_line(exc)})") from None


def _check_flatbuffer(compiled: Path, model: Path, redo: str) -> tuple[int, int]:
    """How many ``edgetpu-custom-op`` the compiled file holds (its Edge TPU subgraphs) and how many other ops (what
    runs on the CPU), after checking that it is a TFLite flatbuffer with the int8 model's input/output shapes and dtypes."""
    from pipeline.formats.tflite_graph import read_tflite

    try:
        graph = read_tflite(compiled)
    except Exception as exc:  # noqa: BLE001  a truncated or foreign file can fail anywhere in the flatbuffer reader
        reason = str(exc).removeprefix(f"{compiled}: ") if isinstance(exc, PipelineError) else ""
        if not reason or reason.startswith("not a TFLite flatbuffer"):
            reason = "not a TFLite flatbuffer (edgetpu_compiler writes one; was the file cut short or replaced?)"
        raise PipelineError(f"{compiled}: {one_line(reason)}; {redo}") from None
    tpu_ops = sum(op.opcode_name == CUSTOM_OP for op in graph.ops)
    if not tpu_ops:
        raise PipelineError(f"{compiled}: a TFLite model without an {CUSTOM_OP}, so not compiled for the Edge TPU; {redo}")
    source = read_tflite(model)

    def io(g) -> str:
        def shapes(ts):
            return ", ".join(f"{'×'.join(map(str, t.shape))} {t.dtype}" for t in ts) or "none"

        return f"inputs {shapes(g.inputs)}; outputs {shapes(g.outputs)}"

    if io(graph) != io(source):
        raise PipelineError(f"{compiled}: {io(graph)}, but {model.name} has {io(source)}: compiled from another model; {redo}")
    return tpu_ops, len(graph.ops) - tpu_ops
