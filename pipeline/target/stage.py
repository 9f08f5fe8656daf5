"""Target stage: judge the exported deploy artifact against the target's rules; compile it when the
vendor compiler is installed.

Reads ``05_export/artifacts.json`` ({format: relative path}) for ``rules.deploy_artifact``,
runs ``rules.checker`` (Edge TPU: the static op check; TFLite/OpenVINO targets: full-integer,
loads, device plugin), and, for a target with a compiler and ``target.compiler: auto``, runs
it (``*_edgetpu.tflite`` and its log are kept here). Writes ``check.json``; the metrics carry
the verdict, the headline numbers, the compiler's result (or why it did not run: never a
silent skip) and whether the target's device is present.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import atomic_write_json, read_artifacts
from pipeline.errors import PipelineError
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import TargetMetrics

CHECK_FILE = "check.json"
HEADLINE = ("verdict", "summary", "ops_total", "ops_mapped", "ops_cpu", "cpu_from", "parameter_bytes",
            "parameter_bytes_on_edgetpu", "fits_on_chip", "fake_quantize_ops", "checked_on", "full_integer")


def run(ctx: StageContext) -> TargetMetrics:
    from rich.markup import escape

    from pipeline.console import console
    from pipeline.target import TARGETS
    from pipeline.target.device import device_status

    rules = TARGETS[ctx.cfg.target.name]
    artifact = deploy_artifact(Path(ctx.input("export")), rules)
    report = rules.checker(artifact, rules) if rules.checker else {"verdict": "unchecked", "passed": True,
                                                                   "summary": f"no checker for target {rules.name}"}
    atomic_write_json(ctx.out / CHECK_FILE, report)
    style = "green" if report["passed"] else "bold red"
    console.print(f"  [{style}]{rules.name}[/{style}] {artifact.name}: {escape(report['summary'])}")

    compiler = run_compiler(rules, ctx.cfg.target.compiler, artifact, ctx.out)
    if compiler is not None:
        console.print(f"  {rules.compiler}: {escape(compiler_line(compiler))}")
    device = device_status(rules)
    if device["message"]:
        console.print(f"  [yellow]{escape(device['message'])}[/yellow]")

    metrics = {k: report[k] for k in HEADLINE if k in report}
    metrics.update(passed=report["passed"], artifact=rules.deploy_artifact, file=artifact.name)
    if first := report.get("first_unmapped"):
        metrics["first_unmapped"] = f"#{first['index']} {first['op']}: {first['reason']}"
    if report.get("rejected"):
        metrics["rejected"] = report["rejected"]
    if compiler is not None:
        metrics.update(compiler=compiler["status"], compiled=compiler["compiled"])
        if "version" in compiler:  # it ran: its parsed log (per-op table, memory, subgraphs)
            metrics["compiler_result"] = compiler
        if compiler["compiled"] and "ops_mapped" in report:
            metrics["compiler_agrees"] = compiler.get("ops_edgetpu") == report["ops_mapped"]
    metrics.update(device=device["device"], device_available=device["available"])
    if device["message"]:
        metrics["device_note"] = device["message"]
    metrics["check"] = {k: v for k, v in report.items() if k not in metrics}
    return metrics


def deploy_artifact(export_dir: Path, rules) -> Path:
    listed = read_artifacts(export_dir)
    if rules.deploy_artifact not in listed:
        raise PipelineError(f"target {rules.name} deploys '{rules.deploy_artifact}', which export.formats does not list "
                            f"(exported: {', '.join(listed) or 'nothing'}); add it to export.formats and re-run")
    path = export_dir / listed[rules.deploy_artifact]
    if not path.is_file():
        raise PipelineError(f"{path}: listed in artifacts.json but missing; re-run the export stage (--from export)")
    return path


def run_compiler(rules, setting: str, artifact: Path, out: Path) -> dict | None:
    """The vendor compiler's result; None for a target without one. Absent or turned off is said, not skipped."""
    if rules.compiler is None:
        return None
    if rules.compiler != "edgetpu_compiler":
        raise PipelineError(f"target {rules.name}: no integration for compiler '{rules.compiler}' (known: edgetpu_compiler)")
    from pipeline.target.edgetpu_compiler import TURNED_OFF, compile_edgetpu

    if setting == "off":
        return {"status": TURNED_OFF, "compiled": False}
    return compile_edgetpu(artifact, out)


def compiler_line(result: dict) -> str:
    if not result["compiled"]:
        return result["status"]
    mib = (result.get("on_chip_bytes_used") or 0) / 2**20
    off = (result.get("off_chip_bytes") or 0) / 2**20
    return (f"compiled {result['model']}: {result.get('ops_edgetpu')}/{result.get('ops_total')} ops on the Edge TPU, "
            f"{result.get('subgraphs')} subgraph(s), {mib:.2f} MiB on-chip, {off:.2f} MiB off-chip")
