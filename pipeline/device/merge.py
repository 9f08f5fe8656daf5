"""Device results back on the host: read and check ``results.json`` files, merge them into a run's report."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.device.runner import RESULTS_KIND, RESULTS_VERSION
from pipeline.errors import PipelineError


def read_device_results(path: Path) -> dict:
    """A results file written by ``python -m pipeline.device run``, checked enough to merge safely."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such device results file (python -m pipeline.device run BUNDLE -o {path.name})")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND:
        raise PipelineError(f"{path}: not a device results file (expected \"kind\": \"{RESULTS_KIND}\")")
    if data.get("version") != RESULTS_VERSION:
        raise PipelineError(f"{path}: device results version {data.get('version')!r}, this pipeline reads {RESULTS_VERSION}")
    if not isinstance(data.get("rows"), list) or not isinstance(data.get("device"), dict):
        raise PipelineError(f"{path}: device results without 'rows' or 'device'")
    check_against_schema(path, data)
    return data


def check_against_schema(path: Path, data: dict) -> None:
    """Every row as the report would hold it, and the device block, must fit the report schema: a bad file is
    refused here, before it is kept in RUN/device/ where it would break every later report."""
    from pipeline.report.build import device_row
    from pipeline.report.model import LatencyRow, Machine, problem

    device = {**data["device"], "results_file": path.name, "target": (data.get("bundle") or {}).get("target")}
    if bad := problem(Machine, device):
        raise PipelineError(f"{path}: device.{bad}; not a results file of python -m pipeline.device run")
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise PipelineError(f"{path}: rows[{i}] is not an object; not a results file of python -m pipeline.device run")
        if bad := problem(LatencyRow, device_row(row, data["device"]["name"], settings.get("threads", 0))):
            raise PipelineError(f"{path}: rows[{i}].{bad}; not a results file of python -m pipeline.device run")


def merge_into_report(run_dir: Path, results_paths: list[Path]) -> None:
    """Re-write the run's report in every format with the devices' rows beside the host's."""
    from pipeline.report.cli import report_command

    report_command(Path(run_dir), baseline=None, device_results=[Path(p) for p in results_paths])
