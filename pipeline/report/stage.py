"""Report stage: turn the benchmark's results into report.json/md/html, in 08_report/ and in the run folder.

Device results files already kept in ``RUN/device/`` (by ``python -m pipeline.device remote`` or
``python -m pipeline report RUN --device-results …``) are merged as extra rows, so re-running
the report never drops a board's numbers. The run folder's copies are what users open:
``runs/<name>/report.html``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import Manifest, atomic_write_bytes, read_json
from pipeline.errors import PipelineError
from pipeline.report.build import RunRecords, build_report
from pipeline.report.console import print_summary, summary_console
from pipeline.report.device_results import discover_device_results, read_device_files
from pipeline.report.where import read_sources
from pipeline.report.write import ALL_FILES, load_samples, write_report
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import ExportMetrics, QatMetrics, ReportMetrics, TargetMetrics
from pipeline.stages import RESULTS_FILE, SAMPLES_FILE


def run(ctx: StageContext) -> ReportMetrics:
    bench = ctx.input("benchmark")
    devices = readable_device_results(discover_device_results(ctx.cfg.run_dir))
    records = RunRecords(folder=str(ctx.cfg.run_dir), config=ctx.cfg.model_dump(mode="json"),
                         export=_metrics(ctx.inputs.get("export"), ExportMetrics),
                         target=_metrics(ctx.inputs.get("target"), TargetMetrics),
                         qat=_metrics(ctx.inputs.get("qat"), QatMetrics),
                         where=read_sources(ctx.inputs.get("export"), bench))
    report = build_report(read_json(bench / RESULTS_FILE), devices, records=records)
    written = write_report(report, ctx.out, list(ctx.cfg.report.formats), load_samples(bench / SAMPLES_FILE))
    publish(written, ctx.cfg.run_dir)
    console = summary_console()
    print_summary(report, console)
    if written:
        console.print(f"report: {ctx.cfg.run_dir / written[-1].name}")
    return ReportMetrics(
        verdict=report["verdict"]["status"],
        gates_failed=sum(g["status"] == "FAIL" for g in report["gates"]),
        rows=len(report["latency"]),
        devices=len(devices),
        files=[p.name for p in written],
        failures=report["verdict"]["failures"],
    )


def _metrics(folder: Path | None, model: type[ExportMetrics] | type[TargetMetrics] | type[QatMetrics]):
    """A stage's manifest metrics as ``model``; None where the run has no such stage or it wrote no manifest."""
    m = Manifest.read(folder) if folder is not None else None
    return model.of(m.metrics) if m else None


def publish(written: list[Path], run_dir: Path) -> None:
    """Copy the report files into the run folder, removing report files of formats no longer asked for."""
    names = {p.name for p in written}
    for name in ALL_FILES:
        if name not in names:
            (Path(run_dir) / name).unlink(missing_ok=True)
    for path in written:
        atomic_write_bytes(Path(run_dir) / path.name, path.read_bytes())


def readable_device_results(paths: list[Path]) -> list[dict]:
    """Parse kept device results files; one that no longer reads is skipped with a warning, not fatal."""
    out = []
    for path in paths:
        try:
            out += read_device_files([path])
        except PipelineError as exc:
            summary_console().print(f"[yellow]skipping device results: {exc}[/yellow]")
    return out
