"""Device results files on the host: find them in ``RUN/device/``, read and check them against the report schema.

The report reads what ``python -m pipeline.device run`` writes on a board, so the reader lives
with the report (it checks rows with the report's own ``device_row`` and schema);
``pipeline.device.merge`` calls the report, never the other way round.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.report.schema import DEVICE_RESULTS_KIND, DEVICE_RESULTS_VERSION
from pipeline.errors import PipelineError
from pipeline.report.build import device_row


def read_device_results(path: Path) -> dict:
    """A results file written by ``python -m pipeline.device run``, checked enough to merge safely."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such device results file (python -m pipeline.device run BUNDLE -o {path.name})")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != DEVICE_RESULTS_KIND:
        raise PipelineError(f"{path}: not a device results file (expected \"kind\": \"{DEVICE_RESULTS_KIND}\")")
    if data.get("version") != DEVICE_RESULTS_VERSION:
        raise PipelineError(f"{path}: device results version {data.get('version')!r}, this pipeline reads {DEVICE_RESULTS_VERSION}")
    if not isinstance(data.get("rows"), list) or not isinstance(data.get("device"), dict):
        raise PipelineError(f"{path}: device results without 'rows' or 'device'")
    check_against_schema(path, data)
    return data


def check_against_schema(path: Path, data: dict) -> None:
    """Every row as the report would hold it, and the device block, must fit the report schema: a bad file is
    refused here, before it is kept in RUN/device/ where it would break every later report."""
    from pipeline.report.model import problem  # pydantic: only when a file is read
    from pipeline.report.model_rows import LatencyRow, Machine, OpTimeTable

    device = {**data["device"], "results_file": path.name, "target": (data.get("bundle") or {}).get("target")}
    if bad := problem(Machine, device):
        raise PipelineError(f"{path}: device.{bad}; not a results file of python -m pipeline.device run")
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    tables = data.get("op_time", {})  # the runner's --op-time: per-op time of the int8 artifacts
    if not isinstance(tables, dict):
        raise PipelineError(f"{path}: op_time is not an object; not a results file of python -m pipeline.device run")
    for key, table in tables.items():
        if bad := problem(OpTimeTable, table):
            raise PipelineError(f"{path}: op_time.{key}.{bad}; not a results file of python -m pipeline.device run")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise PipelineError(f"{path}: rows[{i}] is not an object; not a results file of python -m pipeline.device run")
        if bad := problem(LatencyRow, device_row(row, data["device"]["name"], settings.get("threads", 0))):
            raise PipelineError(f"{path}: rows[{i}].{bad}; not a results file of python -m pipeline.device run")


def discover_device_results(run_dir: Path) -> list[Path]:
    """Device results files kept in ``RUN/device/`` (where ``pipeline.device`` remote runs put them)."""
    folder = Path(run_dir) / "device"
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            if json.loads(path.read_text()).get("kind") == DEVICE_RESULTS_KIND:
                found.append(path)
        except (ValueError, OSError, AttributeError):
            continue
    return found


def read_device_files(paths: list[Path]) -> list[dict[str, Any]]:
    """Parse and check results files (``read_device_results``), tagging each with its path."""
    out = []
    for path in paths:
        data = read_device_results(Path(path))
        data["results_file"] = Path(path).name
        out.append(data)
    return out
