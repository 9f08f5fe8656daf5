"""Target stage: judge the exported deploy artifact against the target's rules; compile it when the
vendor compiler is installed.

Reads ``05_export/artifacts.json`` ({format: relative path}) for ``rules.deploy_artifact``,
runs ``rules.checker`` (a static op check for an accelerator; TFLite/OpenVINO targets: full-integer,
loads, device plugin), and, for a target with a vendor compiler and ``target.compiler: auto``, calls
it (the compiled model and its log are kept here). Writes ``check.json``; the metrics carry
the verdict, the check's headline numbers (``rules.headline``), the compiler's ``CompileResult``
(or why it did not run: never a silent skip) and whether the target's device is present.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import atomic_write_json, read_artifacts
from pipeline.errors import PipelineError
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import TargetMetrics
from pipeline.target.rules import TURNED_OFF, CompileResult

CHECK_FILE = "check.json"


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
        console.print(f"  {rules.compiler.name}: {escape(compiler_line(compiler, rules.accelerator))}")
    device = device_status(rules)
    if device["message"]:
        console.print(f"  [yellow]{escape(device['message'])}[/yellow]")

    metrics = {k: report[k] for k in rules.headline if k in report}
    metrics.update(passed=report["passed"], artifact=rules.deploy_artifact, file=artifact.name)
    if first := report.get("first_unmapped"):
        metrics["first_unmapped"] = f"#{first['index']} {first['op']}: {first['reason']}"
    if report.get("rejected"):
        metrics["rejected"] = report["rejected"]
    if compiler is not None:
        metrics.update(compiler=compiler.status, compiled=compiler.compiled)
        if compiler.ran:  # its parsed log (per-op table, memory, subgraphs)
            metrics["compiler_result"] = compiler.as_dict()
        if compiler.compiled and "ops_mapped" in report:
            metrics["compiler_agrees"] = compiler.ops_mapped == report["ops_mapped"]
    metrics.update(device=device["device"], device_available=device["available"])
    if device["message"]:
        metrics["device_note"] = device["message"]
    metrics["check"] = {k: v for k, v in report.items() if k not in metrics}
    return TargetMetrics.model_validate(metrics)


def deploy_artifact(export_dir: Path, rules) -> Path:
    listed = read_artifacts(export_dir)
    if rules.deploy_artifact not in listed:
        raise PipelineError(f"target {rules.name} deploys '{rules.deploy_artifact}', which export.formats does not list "
                            f"(exported: {', '.join(listed) or 'nothing'}); add it to export.formats and re-run")
    path = export_dir / listed[rules.deploy_artifact]
    if not path.is_file():
        raise PipelineError(f"{path}: listed in artifacts.json but missing; re-run the export stage (--from export)")
    return path


def run_compiler(rules, setting: str, artifact: Path, out: Path) -> CompileResult | None:
    """The vendor compiler's result; None for a target without one. Absent or turned off is said, not skipped."""
    if rules.compiler is None:
        return None
    if setting == "off":
        return CompileResult(status=TURNED_OFF, compiled=False)
    return rules.compiler(artifact, out)


def compiler_line(result: CompileResult, accelerator: str | None) -> str:
    if not result.compiled:
        return result.status
    mib = (result.on_chip_bytes_used or 0) / 2**20
    off = (result.off_chip_bytes or 0) / 2**20
    return (f"compiled {result.model}: {result.ops_mapped}/{result.ops_total} ops on the {accelerator or 'accelerator'}, "
            f"{result.subgraphs} subgraph(s), {mib:.2f} MiB on-chip, {off:.2f} MiB off-chip")
