"""Static Edge TPU check of an int8 .tflite: which ops map to the Edge TPU, where the CPU takes over, memory.

Follows Coral's model requirements (coral.ai/docs/edgetpu/models-intro): the model must be
fully 8-bit quantised (else the compiler stops with "Model not quantized"), tensor sizes and
parameters constant at compile time, tensors at most 3-D unless the outer dimensions are 1
(so batch 1), and only the supported ops within their limits (``edge_tpu_ops``). The compiler
makes ONE Edge TPU partition: from the first op it cannot map, that op and every op after
it run on the CPU, even supported ones (ops before the first mappable one, e.g. a float
input's QUANTIZE, also run on the CPU, as the compiler's logs show). Parameters of the mapped
ops are cached in the ~8 MiB on-chip memory; what does not fit streams from the host on
every inference (the compiler's log gives the exact split, with its padding; this sum of
constant tensor bytes is a lower bound).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.formats.tflite_graph import TFLiteGraph, float_ops_between_io, read_tflite
from pipeline.target.edge_tpu_ops import AFTER_CUT, MAPPED, op_problem
from pipeline.target.tflite_options import OpView, read_op_views

ON_CHIP_BYTES = 8 * 1024 * 1024  # Edge TPU SRAM for caching parameters (the compiler reports ~7.9 MiB usable)
SOURCE = "coral.ai/docs/edgetpu/models-intro (requirements, supported operations; Edge TPU Compiler 16)"
FULLY, PARTIALLY, NOT_MAPPED = "fully mapped", "partially mapped", "not mapped"
# the report's numbers the target stage's metrics carry: the generic ones plus the parameters cached on the chip
HEADLINE = ("verdict", "summary", "ops_total", "ops_mapped", "ops_cpu", "cpu_from", "parameter_bytes",
            "parameter_bytes_on_edgetpu", "fits_on_chip")


def check_edgetpu(path: Path, rules=None) -> dict:
    """The static verdict for one .tflite (``rules`` unused: the Edge TPU's rules are fixed); JSON-able."""
    graph = read_tflite(Path(path))
    return judge(graph, read_op_views(graph))


def judge(graph: TFLiteGraph, views: list[OpView]) -> dict:
    rejected = model_rejection(graph)
    rows = []
    for v in views:
        problem = op_problem(v)
        rows.append({"index": v.op.index, "op": v.op.opcode_name, "supported": problem is None,
                     "status": MAPPED if problem is None else problem[0], "reason": problem[1] if problem else None})

    start, cut = partition([r["supported"] for r in rows]) if not rejected else (None, None)
    for r in rows:
        on_tpu = start is not None and start <= r["index"] < (cut if cut is not None else len(rows))
        r["on_edgetpu"] = on_tpu
        if rejected:
            r["status"], r["reason"] = "Model rejected", r["reason"] or rejected
        elif not on_tpu and r["supported"]:
            where = "before" if start is not None and r["index"] < start else "after"
            r["status"] = AFTER_CUT if where == "after" else "Runs on the CPU before the Edge TPU partition"
            r["reason"] = (f"supported, but after the CPU cut at #{cut}" if where == "after"
                           else "supported, but precedes the Edge TPU partition")

    mapped = sum(r["on_edgetpu"] for r in rows)
    first = next((r for r in rows if not r["supported"]), None)
    params = sum(t.nbytes for t in graph.tensors if t.is_constant)
    params_tpu = _parameter_bytes(graph, {r["index"] for r in rows if r["on_edgetpu"]})
    verdict = NOT_MAPPED if rejected or mapped == 0 else FULLY if mapped == len(rows) else PARTIALLY
    report = {
        "checker": "edgetpu_static",
        "source": SOURCE,
        "verdict": verdict,
        "passed": verdict == FULLY,
        "summary": "",
        "ops_total": len(rows),
        "ops_mapped": mapped,
        "ops_cpu": len(rows) - mapped,
        "rejected": rejected,
        "first_unmapped": {k: first[k] for k in ("index", "op", "reason")} if first else None,
        "cpu_from": cut,  # index of the first op after the Edge TPU partition (None: no cut)
        "cpu_prefix_ops": start or 0,  # ops before the partition (run on the CPU)
        "parameter_bytes": params,
        "parameter_bytes_on_edgetpu": params_tpu,
        "on_chip_bytes": ON_CHIP_BYTES,
        "fits_on_chip": params_tpu <= ON_CHIP_BYTES,
        "op_counts": _counts(rows),
        "ops": rows,
    }
    report["summary"] = summary_line(report)
    return report


def model_rejection(graph: TFLiteGraph) -> str | None:
    """Why the compiler refuses the whole model (nothing maps), or None."""
    floats = float_ops_between_io(graph)
    if floats:
        more = f" (+{len(floats) - 2} more)" if len(floats) > 2 else ""
        return f"Model not quantized: float compute at {'; '.join(floats[:2])}{more}"
    dynamic = [t for t in graph.inputs + graph.tensors if any(d < 0 for d in t.shape_signature)]
    if dynamic:
        t = dynamic[0]
        return f"dynamic-sized tensor '{t.name}' {list(t.shape_signature)}: sizes must be constant at compile time"
    if graph.num_subgraphs > 1:
        return f"{graph.num_subgraphs} subgraphs (control flow): only one is compiled"
    return None


def partition(supported: list[bool]) -> tuple[int | None, int | None]:
    """(start, cut) of the single Edge TPU partition: the first run of mappable ops, in execution order.

    ``start`` is None when no op maps; ``cut`` is the index of the first op after the run
    (None when the run reaches the last op).
    """
    start = next((i for i, ok in enumerate(supported) if ok), None)
    if start is None:
        return None, None
    cut = next((i for i in range(start, len(supported)) if not supported[i]), None)
    return start, cut


def summary_line(r: dict) -> str:
    mib = r["parameter_bytes_on_edgetpu"] / 2**20
    memory = f"{mib:.2f} MiB of parameters ({'fits' if r['fits_on_chip'] else 'exceeds'} the ~8 MiB on-chip cache)"
    if r["rejected"]:
        return f"{r['verdict']}: {r['rejected']}"
    head = f"{r['verdict']}: {r['ops_mapped']}/{r['ops_total']} ops on the Edge TPU"
    first = r["first_unmapped"]
    if first is None:
        return f"{head}, {memory}"
    cut = f", CPU from #{r['cpu_from']}" if r["cpu_from"] is not None else ""
    return f"{head}{cut}; first unmapped #{first['index']} {first['op']}: {first['reason']}; {memory}"


def _parameter_bytes(graph: TFLiteGraph, op_indices: set[int]) -> int:
    seen, total = set(), 0
    for op in graph.ops:
        if op.index in op_indices:
            for t in op.inputs:
                if t.is_constant and t.index not in seen:
                    seen.add(t.index)
                    total += t.nbytes
    return total


def _counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        c = counts.setdefault(r["op"], {"edgetpu": 0, "cpu": 0})
        c["edgetpu" if r["on_edgetpu"] else "cpu"] += 1
    return counts
