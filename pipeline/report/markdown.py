"""report.md: the same tables as the HTML report, as GitHub-flavoured Markdown."""

from __future__ import annotations

from typing import Any

from pipeline.report import tables

def render_markdown(report: dict[str, Any]) -> str:
    run, data = report["run"], report["data"]
    host = report["environment"]["host"]
    has_devices = any(r["where"] == "device" for r in report["latency"])
    lines = [
        f"# Benchmark report: {escape(run['name'])}: {report['verdict']['status']}",
        "",
        *[f"- **{escape(line)}**" if i == 0 else f"- {escape(line)}" for i, line in enumerate(tables.verdict_lines(report))],
        "",
        table(*tables.headline(report)),
        "",
        f"Target **{escape(run['target'])}**, deploy artifact **{escape(run['deploy_artifact'])}**; {escape(tables.run_label(report))}; "
        f"{escape(data.get('dataset'))} test split, {data['images']} images; host {escape(host.get('cpu'))} "
        f"({host.get('usable_cores')} usable cores). Created {report['created']}, pipeline {report['pipeline_version']}, "
        f"report schema {report['schema_version']}.",
        "",
        "## Formats",
        "",
        table(*tables.summary(report)),
        "",
        tables.SPEEDUP_NOTE,
        "",
        *(["## On the device", "", table(*tables.devices(report)), "", tables.DEVICE_NOTE, ""] if has_devices else []),
        "## Accuracy through the stages",
        "",
        "Each stage is compared with the stage it was made from: the largest loss is where accuracy goes.",
        "",
        table(*tables.stages(report)),
        "",
        "## Gates",
        "",
        table(*tables.gates(report)) if report["gates"] else "No gates configured (benchmark.gates).",
        "",
        "## Checks",
        "",
        table(*tables.checks(report)) if report["checks"] else "No checks recorded (the export and target stages' manifests are missing).",
        "",
        *_decisions(report),
        *_layer_error(report),
        *_where(report),
        "## Target",
        "",
        table(*tables.target(report)),
        "",
        "## Latency details",
        "",
        table(*tables.latency_details(report)),
        "",
        "## Environment",
        "",
        table(*tables.environment(report)),
        "",
        "## Method",
        "",
        tables.method(report),
        "",
    ]
    return "\n".join(lines)


def _decisions(report: dict[str, Any]) -> list[str]:
    from pipeline.report import decisions

    if not report.get("decisions"):
        return []
    return [f"## {decisions.TITLE}", "", table(*decisions.table(report["decisions"])), "",
            *(f"- {escape(n)}" for n in decisions.notes(report["decisions"])), ""]


def _layer_error(report: dict[str, Any]) -> list[str]:
    from pipeline.report import layer_error

    found = layer_error.artifacts(report)
    if not found:
        return []
    lines = [f"## {layer_error.TITLE}", ""]
    for key, info in found.items():
        rows = layer_error.table(info)
        lines += [f"### {escape(layer_error.heading(key))}", "", *([table(*rows), ""] if rows else []),
                  escape(layer_error.note(key, info)), ""]
    return lines


def _where(report: dict[str, Any]) -> list[str]:
    from pipeline.report import layer_error, where

    if not report.get("where"):
        return []
    lines = [f"## {where.TITLE}", ""]
    for key, info in report["where"].items():
        rows = where.table(info)
        lines += [f"### {escape(layer_error.heading(key))}", "", *([table(*rows), ""] if rows else []),
                  *(f"- {escape(n)}" for n in where.notes(info)), ""]
    return lines


_MARKUP = str.maketrans({c: "\\" + c for c in "\\`*|"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_BRACKETS = str.maketrans({"[": "\\[", "]": "\\]"})


def escape(text) -> str:
    """Text from a run or a board (run, target and device names, CPU strings) as literal Markdown: no HTML,
    no links, no emphasis, no table breaks, one line. Brackets are escaped where they could open a link
    (``](`` or ``]:``); elsewhere they stay as written (``93.0 % [86.3–96.6]``)."""
    text = " ".join(str(text).split()).translate(_MARKUP)
    return text.translate(_BRACKETS) if "](" in text or "]:" in text else text


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(escape(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
