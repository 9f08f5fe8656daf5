"""What the run's records say about the deploy artifact: the target section and every check's verdict with its message.

Read from the export stage's metrics (fidelity and the op check of each artifact, the teacher's ONNX export)
and the target stage's (the target check, the vendor compiler, the runtime device), both typed by
``pipeline.stage_metrics``, and from the device rows of the latency table.
"""

from __future__ import annotations

from typing import Any

from pipeline.benchmark.gates import FAIL, PASS
from pipeline.stage_metrics import ExportMetrics, Fidelity, TargetMetrics


def target_info(metrics: TargetMetrics, name: str, rules) -> dict[str, Any]:
    """The target stage's metrics in the report's shape: the check, the vendor compiler's result, the device; the
    checker's other headline numbers (keys the model does not name) as ``details``."""
    compiler = None
    vendor = rules.compiler.name if rules and rules.compiler else None
    if vendor or "compiler" in metrics.model_fields_set:
        result = metrics.compiler_result
        status = metrics.compiler or "no compiler result recorded by the target stage"
        compiler = {
            "name": vendor or "compiler",
            "ran": result is not None or status.startswith(("compiled", "failed")),  # a result is recorded when it ran
            "compiled": bool(metrics.compiled),
            "status": status,
            "version": result.version if result else None,
            "ops_total": result.ops_total if result else None,
            "ops_mapped": result.ops_mapped if result else None,
            "subgraphs": result.subgraphs if result else None,
            "on_chip_bytes_used": result.on_chip_bytes_used if result else None,
            "off_chip_bytes": result.off_chip_bytes if result else None,
            "agrees_with_check": metrics.compiler_agrees,
        }
    return {
        "name": name,
        "accelerator": rules.accelerator if rules else None,
        "artifact": metrics.artifact,
        "file": metrics.file,
        "checker": (metrics.check or {}).get("checker"),
        "verdict": metrics.verdict,
        "passed": metrics.passed,
        "summary": metrics.summary,
        "compiler": compiler,
        "device": metrics.device,
        "device_available": metrics.device_available,
        "device_note": metrics.device_note,
        "details": {k: v for k, v in (metrics.model_extra or {}).items() if _scalar(v)},
    }


def checks(export: ExportMetrics, target: dict[str, Any], latency: list[dict[str, Any]], deploy: str,
           devices: list[str]) -> list[dict[str, Any]]:
    """Every check's verdict with its message; ``deploy`` marks those about the deploy artifact (a FAIL fails the run)."""
    out = []
    for key, row in (export.fidelity or {}).items():
        out.append(_check("export fidelity", key, row.passed, key == deploy, row.message or _fidelity_numbers(row)))
        if (op := row.op_check) is not None and op.manifest_dict():  # an empty record: no op check ran
            what = ("; ".join(op.problems or []) if not op.passed else
                    f"{sum((op.op_counts or {}).values())} ops, all integer, {op.io_dtype} I/O")
            out.append(_check("op check", key, op.passed, key == deploy, f"full-integer: {what}"))
    if (teacher := export.teacher_onnx) is not None and teacher.manifest_dict():
        out.append(_check("export fidelity", "teacher onnx", teacher.passed, False, teacher.message or _fidelity_numbers(teacher)))
    if target.get("verdict") is not None:
        out.append(_check("target check", target.get("artifact") or deploy, target.get("passed"), True,
                          target.get("summary") or target["verdict"]))
    if c := target.get("compiler"):
        status = PASS if c["compiled"] else FAIL if c["ran"] else "NOT RUN"
        out.append({"kind": "compiler", "subject": c["name"], "status": status, "deploy": True, "message": compiler_sentence(c, target)})
    if target.get("device_available") is False:
        out.append({"kind": "target device", "subject": str(target.get("device")), "status": "NOT RUN", "deploy": True,
                    "message": target.get("device_note") or f"no {target.get('device')} on this machine"})
    for r in latency:
        if r["where"] == "device" and r["model"] == "student" and r.get("deploy"):
            subject = f"{r['artifact']} on {r['device']} (threads={'all' if r['threads'] == 0 else r['threads']})"
            out.append(_check("device run", subject, not r.get("error"), r["device"] in devices, r.get("error") or _device_numbers(r)))
    return out


def compiler_sentence(c: dict[str, Any], target: dict[str, Any]) -> str:
    """Whether the vendor compiler ran and what it mapped, in words."""
    if c["compiled"]:
        mapped = f": {c['ops_mapped']}/{c['ops_total']} ops on the {target.get('accelerator') or 'accelerator'}" if c["ops_total"] else ""
        if c["ops_total"] and c.get("ops_mapped") is not None:
            mapped += f", {c['ops_total'] - c['ops_mapped']} on the CPU"
        subgraphs = f", {c['subgraphs']} subgraph(s)" if c.get("subgraphs") is not None else ""
        if c.get("on_chip_bytes_used") is not None:  # parameters cached in the chip's SRAM vs streamed from the host
            subgraphs += (f", {c['on_chip_bytes_used'] / 2**20:.2f} MiB of parameters on-chip, "
                          f"{(c.get('off_chip_bytes') or 0) / 2**20:.2f} MiB off-chip")
        version = f" {c['version']}" if c.get("version") else ""
        agrees = "" if c.get("agrees_with_check") in (None, True) else "; it disagrees with the static check"
        return f"{c['name']}{version} compiled it{mapped}{subgraphs}{agrees}"
    if c["ran"]:
        return f"{c['name']} ran and failed: {c['status']}"
    return f"{c['name']} did not run ({c['status']})"

def _check(kind: str, subject: str, passed: bool | None, deploy: bool, message: str) -> dict[str, Any]:
    status = "NOT RUN" if passed is None else PASS if passed else FAIL  # None: the record has no verdict
    return {"kind": kind, "subject": subject, "status": status, "deploy": deploy, "message": message}


def _fidelity_numbers(row: Fidelity) -> str:
    if row.accuracy is None:
        return "no numbers"
    if row.precision == "int8":
        return (f"accuracy {row.accuracy:.2%} vs fp32 {row.reference_accuracy or 0:.2%}, "
                f"agreement {row.agreement or 0:.2%} on {row.images} images")
    return (f"agreement {row.agreement or 0:.2%}, max |Δlogit| {row.max_abs_logit_diff or 0:.1e}, "
            f"accuracy {row.accuracy:.2%} on {row.images} images")


def _device_numbers(r: dict[str, Any]) -> str:
    parts = [f"p50 {r['latency_ms']['p50']:.3f} ms"] if r.get("latency_ms") else []
    if r.get("accuracy") is not None:
        parts.append(f"top-1 {r['accuracy']:.2%} on {r.get('images')} images")
    if r.get("host_accuracy") is not None:
        parts.append(f"host {r['host_accuracy']:.2%} on the same images")
    if r.get("agreement_with_host") is not None:
        parts.append(f"agreement with the host {r['agreement_with_host']:.2%}")
    return ", ".join(parts) or "ran"


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))

