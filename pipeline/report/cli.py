"""``python -m pipeline report RUN [--baseline OTHER_RUN] [--device-results FILE …]``: rewrite, merge, compare.

Re-writes ``RUN/report.{json,md,html}`` from ``RUN/07_benchmark`` with every device results
file kept in ``RUN/device/`` (the given ones are copied there first, so later report runs keep
them), prints the summary, and with ``--baseline`` prints (and writes
``RUN/compare_<baseline>.md``) the side-by-side comparison of ``pipeline.report.compare``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import atomic_write_bytes, read_json
from pipeline.errors import PipelineError
from pipeline.report.build import build_report, discover_device_results, read_device_files
from pipeline.lock import run_lock
from pipeline.report.compare import compare, load_report
from pipeline.report.console import print_summary, summary_console
from pipeline.report.stage import RESULTS_FILE, SAMPLES_FILE, readable_device_results
from pipeline.report.write import FILES, load_samples, write_report

BENCHMARK_DIR = "07_benchmark"


def report_command(run_dir: Path, baseline: Path | None = None, device_results: list[Path] = ()) -> int:
    run_dir = Path(run_dir)
    results_path = run_dir / BENCHMARK_DIR / RESULTS_FILE
    if not results_path.is_file():
        raise PipelineError(f"{results_path}: missing; run the benchmark stage first (python -m pipeline run <recipe> --until benchmark)")
    if baseline is not None:
        load_report(Path(baseline))  # a missing baseline fails before anything is rewritten or printed
    read_device_files(list(device_results))  # refuse a bad file before touching anything
    with run_lock(run_dir):
        return _rewrite(run_dir, results_path, baseline, device_results)


def _rewrite(run_dir: Path, results_path: Path, baseline: Path | None, device_results: list[Path]) -> int:
    keep_device_results(run_dir, list(device_results))
    devices = readable_device_results(discover_device_results(run_dir))
    report = build_report(read_json(results_path), devices, run_name=run_dir.resolve().name)
    write_report(report, run_dir, list(FILES), load_samples(run_dir / BENCHMARK_DIR / SAMPLES_FILE))
    console = summary_console()
    print_summary(report, console)
    if baseline is not None:
        text = compare(run_dir, Path(baseline))
        atomic_write_bytes(run_dir / f"compare_{Path(baseline).name}.md", text.encode())
        print(text)
    console.print(f"report: {run_dir / FILES['html']} ({len(devices)} device results merged)")
    return 0


def keep_device_results(run_dir: Path, paths: list[Path]) -> None:
    """Copy results files into RUN/device/ (same name replaces: a re-measured device's newest file wins)."""
    folder = Path(run_dir) / "device"
    for path in map(Path, paths):
        dst = folder / path.name
        if dst.exists() and dst.resolve() == path.resolve():
            continue
        atomic_write_bytes(dst, path.read_bytes())
