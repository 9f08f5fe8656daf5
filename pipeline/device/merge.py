"""Device results back on the host: merge ``results.json`` files into a run's report (read and checked by ``pipeline.report.device_results``).

The files are kept in ``RUN/device/``, so every later report keeps their rows and, from a runner given ``--op-time``, their
per-op time, which the report's "where accuracy and time go" shows instead of the host's (naming the board)."""

from __future__ import annotations

from pathlib import Path


def merge_into_report(run_dir: Path, results_paths: list[Path]) -> None:
    """Re-write the run's report in every format with the devices' rows beside the host's and their per-op time."""
    from pipeline.report.cli import report_command

    report_command(Path(run_dir), baseline=None, device_results=[Path(p) for p in results_paths])
