"""What report files say about where they come from: a copied run folder's own name; names escaped in Markdown."""

from __future__ import annotations

import json
import re
import shutil

from pipeline.report.cli import report_command
from test_report import device_results, make_results


def _run(tmp_path, name: str):
    run = tmp_path / "runs" / name
    (run / "07_benchmark").mkdir(parents=True)
    (run / "07_benchmark" / "benchmark.json").write_text(json.dumps(make_results()))  # its run is named "demo"
    return run


def test_a_copied_run_folder_reports_its_own_name(tmp_path):
    first = _run(tmp_path, "demo")
    report_command(first)
    copy = tmp_path / "runs" / "demo-copy"
    shutil.copytree(first, copy)
    report_command(copy)
    assert json.loads((copy / "report.json").read_text())["run"]["name"] == "demo-copy"
    assert (copy / "report.md").read_text().splitlines()[0] == "# Benchmark report: demo-copy: NOT MEASURED"


def test_run_and_device_names_are_literal_markdown(tmp_path):
    run = _run(tmp_path, "a*b*_[x](evil)")
    board = device_results(name="<img src=x onerror=alert(1)>|pi")
    (tmp_path / "board.json").write_text(json.dumps(board))
    report_command(run, device_results=[tmp_path / "board.json"])
    md = (run / "report.md").read_text()
    assert md.splitlines()[0] == r"# Benchmark report: a\*b\*_\[x\](evil): FAIL"
    assert "<img" not in md and r"&lt;img src=x onerror=alert(1)&gt;\|pi" in md
    cells = lambda line: len(re.split(r"(?<!\\)\|", line))  # noqa: E731  cells between unescaped pipes
    lines = md.splitlines()
    headers = {i + 1: lines[i] for i in range(len(lines) - 1) if lines[i + 1].startswith("|---")}
    checked = 0
    for i, line in enumerate(lines):
        if "&lt;img" in line and line.startswith("| "):
            header = headers[max(h for h in headers if h <= i)]
            assert cells(line) == cells(header), line  # the name's '|' did not add a column
            checked += 1
    assert checked >= 2  # the latency table and the environment table name the device
