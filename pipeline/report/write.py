"""Write a built report in the asked formats into a folder: report.json (with its schema beside it), report.md, report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import atomic_write_bytes, atomic_write_json
from pipeline.report.schema import SCHEMA_FILE
from pipeline.stages import REPORT_FILES as FILES

ALL_FILES = (*FILES.values(), SCHEMA_FILE)  # everything write_report may leave in a folder


def write_report(report: dict[str, Any], folder: Path, formats: list[str] = ("json", "md", "html"),
                 samples: dict[str, np.ndarray] | None = None) -> list[Path]:
    """The written paths, in ``formats`` order (report.json followed by its schema); ``samples``
    (row sample_key -> ms) feed the latency plot."""
    folder = Path(folder)
    written = []
    for fmt in formats:
        path = folder / FILES[fmt]
        if fmt == "json":
            from pipeline.report.model import json_schema

            atomic_write_json(path, report)
            atomic_write_json(folder / SCHEMA_FILE, json_schema())  # report.json names it in "$schema"
            written += [path, folder / SCHEMA_FILE]
            continue
        if fmt == "md":
            from pipeline.report.markdown import render_markdown

            atomic_write_bytes(path, render_markdown(report).encode())
        elif fmt == "html":
            from pipeline.report import plots
            from pipeline.report.html import render_html

            figures = {
                "Accuracy vs latency": plots.pareto(report),
                "Accuracy through the stages": plots.stages(report),
                "Latency distributions": plots.latency(report, samples or {}),
            }
            atomic_write_bytes(path, render_html(report, figures).encode())
        else:
            raise ValueError(f"unknown report format {fmt!r}")
        written.append(path)
    return written


def load_samples(path: Path) -> dict[str, np.ndarray]:
    """The benchmark stage's latency_samples.npz, or nothing if it is absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
