"""The report on the terminal (rich): formats, accuracy chain, gates, then what was measured and the verdict, last."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.report import tables


def summary_console() -> Console:
    """stderr; 160 columns when not a terminal (CI logs), where rich would squeeze the tables into 80."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    return console if console.is_terminal else Console(stderr=True, highlight=False, soft_wrap=True, width=160)


def print_summary(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or summary_console()
    one_machine = len({(r["where"], r["device"]) for r in report["latency"]}) <= 1
    console.print(_rich("Formats (batch 1)", *tables.summary(report), drop={"Machine"} if one_machine else set()))
    console.print(_rich("Accuracy through the stages", *tables.stages(report), drop={"Engine"}))
    if report["gates"]:
        console.print(_rich("Gates", *tables.gates(report), drop={"Message", "Compares"}))
    console.print(_rich(f"{report['run']['name']}: what was measured", *tables.headline(report)))
    for line in tables.verdict_lines(report):  # last, where a terminal's reader looks
        style = "bold red" if line.startswith("FAIL") or line.endswith(": FAIL") else "yellow" if "NOT MEASURED" in line else "bold green"
        console.print(f"[{style}]{escape(line)}[/{style}]")


def _rich(title: str, headers: list[str], rows: list[list[str]], drop: set[str] = frozenset()) -> Table:
    keep = [i for i, h in enumerate(headers) if h not in drop]
    table = Table(title=title, title_justify="left", show_lines=False)
    for i in keep:
        table.add_column(headers[i], overflow="fold")
    for row in rows:
        table.add_row(*(escape(row[i]) for i in keep))  # cells are data, not markup ('[exit 1]')
    return table
