"""``python -m pipeline report RUN [--baseline OTHER_RUN [--fail-on-regression]] [--device-results FILE …]``.

Re-writes ``RUN/report.{json,md,html}`` (and ``report.schema.json``) from ``RUN/07_benchmark`` and
the run's records, with every device results file kept in ``RUN/device/`` (the given ones are
copied there first, so later report runs keep them), and prints the summary. With ``--baseline``
it also writes ``RUN/compare_<baseline>.md`` and ``.json`` (``pipeline.report.compare``) and prints
the Markdown; with ``--fail-on-regression`` it then exits 3 when the deploy artifact regressed,
naming what. Every argument is checked (the baseline read, the device files parsed) before
anything is written.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import atomic_write_bytes, atomic_write_json, read_json
from pipeline.errors import GateFailure, PipelineError
from pipeline.lock import run_lock
from pipeline.report import compare
from pipeline.report.build import build_report, read_records
from pipeline.report.console import print_summary, summary_console
from pipeline.report.device_results import discover_device_results, read_device_files
from pipeline.report.stage import readable_device_results
from pipeline.report.write import FILES, load_samples, write_report
from pipeline.stages import RESULTS_FILE, SAMPLES_FILE, stage_folder


def report_command(run_dir: Path, baseline: Path | None = None, device_results: list[Path] = (), *,
                   fail_on_regression: bool = False, max_accuracy_drop: float = compare.MAX_ACCURACY_DROP,
                   max_latency_increase: float = compare.MAX_LATENCY_INCREASE) -> int:
    run_dir = Path(run_dir)
    results_path = stage_folder(run_dir, "benchmark") / RESULTS_FILE
    if not results_path.is_file():
        raise PipelineError(f"{results_path}: missing; run the benchmark stage first (python -m pipeline run <recipe> --until benchmark)")
    if fail_on_regression and baseline is None:
        raise PipelineError("--fail-on-regression needs --baseline RUN_FOLDER (the run to compare against)")
    if max_accuracy_drop < 0 or max_latency_increase < 0:
        raise PipelineError(f"--max-accuracy-drop {max_accuracy_drop:g} / --max-latency-increase {max_latency_increase:g}: "
                            "limits must be ≥ 0 (points, percent)")
    base_report = compare.load_report(Path(baseline)) if baseline is not None else None  # a bad baseline stops us here
    made = artifacts_made(run_dir, read_json(results_path))
    for path, data in zip(device_results, read_device_files(list(device_results))):  # refuse a bad file before touching anything
        for i, row in enumerate(data["rows"]):
            if row.get("artifact") not in made:
                raise PipelineError(f"{path}: rows[{i}] measured artifact {row.get('artifact')!r}, which {run_dir} never made "
                                    f"(it made {', '.join(sorted(made))}); merge a board's results into the run its bundle came from")
    with run_lock(run_dir):
        return _rewrite(run_dir, results_path, baseline, base_report, device_results, fail_on_regression=fail_on_regression,
                        max_accuracy_drop=max_accuracy_drop, max_latency_increase=max_latency_increase)


def _rewrite(run_dir: Path, results_path: Path, baseline: Path | None, base_report: dict | None, device_results: list[Path], *,
             fail_on_regression: bool, max_accuracy_drop: float, max_latency_increase: float) -> int:
    keep_device_results(run_dir, list(device_results))
    devices = readable_device_results(discover_device_results(run_dir))
    report = build_report(read_json(results_path), devices, records=read_records(run_dir))
    write_report(report, run_dir, list(FILES), load_samples(stage_folder(run_dir, "benchmark") / SAMPLES_FILE))
    console = summary_console()
    print_summary(report, console)
    console.print(f"report: {run_dir / FILES['html']} ({len(devices)} device results merged)")
    if baseline is None:
        return 0
    comp = compare.comparison(run_dir, Path(baseline), max_accuracy_drop=max_accuracy_drop,
                              max_latency_increase=max_latency_increase, run=report, baseline=base_report)
    text = compare.render_markdown(comp)
    stem = run_dir / f"compare_{Path(baseline).resolve().name}"
    atomic_write_bytes(stem.with_suffix(".md"), text.encode())
    atomic_write_json(stem.with_suffix(".json"), comp)
    print(text)
    console.print(f"comparison: {stem}.md, {stem}.json")
    if fail_on_regression and comp["regression"]["regressed"]:
        raise GateFailure(f"{run_dir} regressed against the baseline {baseline}: " + "; ".join(comp["regression"]["regressed"]))
    return 0


def artifacts_made(run_dir: Path, results: dict) -> set[str]:
    """The artifact keys a device row may name: what the host benchmark measured (every exported artifact, failed ones
    included), the export listing, and the compiled model where the run's target has a vendor compiler."""
    from pipeline.stages import ARTIFACTS_FILE
    from pipeline.target import TARGETS

    made = {row.get("artifact") for row in [*results.get("latency", []), *results.get("accuracy", [])]}
    listing = stage_folder(run_dir, "export") / ARTIFACTS_FILE
    if listing.is_file():
        made |= set(read_json(listing))
    rules = TARGETS.get((results.get("run") or {}).get("target"))
    if rules is not None and rules.compiler is not None:
        made.add(rules.compiler.output_format)
    return made - {None}


def keep_device_results(run_dir: Path, paths: list[Path]) -> None:
    """Copy results files into RUN/device/ (same name replaces: a re-measured device's newest file wins)."""
    folder = Path(run_dir) / "device"
    for path in map(Path, paths):
        dst = folder / path.name
        if dst.exists() and dst.resolve() == path.resolve():
            continue
        atomic_write_bytes(dst, path.read_bytes())
