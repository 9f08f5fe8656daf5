"""report.html: one self-contained file (inline CSS, figures as base64 PNG data: URIs, no scripts, no URLs).

It opens offline, survives being mailed or attached to a CI run, and leaks no request to
anyone when opened. Every string from the report is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from pipeline.report import tables

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3} tr:nth-child(even) td{background:#fafafa}
.pass{color:#1a7f37;font-weight:600} .fail{color:#cf222e;font-weight:600} .unmeasured{color:#9a6700;font-weight:600}
.verdict{border-left:6px solid #9a6700;padding:.4em 1em;background:#fff8e5;list-style:none}
.verdict.PASS{border-color:#1a7f37;background:#eefbf1} .verdict.FAIL{border-color:#cf222e;background:#fff0f0}
.verdict li{margin:.2em 0}
figure{margin:1em 0} img{max-width:100%} .note{color:#555;font-size:.9em}
"""
STATUS_CLASS = {"PASS": "pass", "OK": "pass", "FAIL": "fail", "FAILED": "fail", "NOT MEASURED": "unmeasured", "NOT RUN": "unmeasured"}


def render_html(report: dict[str, Any], figures: dict[str, bytes | None]) -> str:
    """``figures``: title -> PNG bytes (None = nothing to plot, skipped)."""
    run, data = report["run"], report["data"]
    host = report["environment"]["host"]
    status = report["verdict"]["status"]
    first, *rest = tables.verdict_lines(report)  # "Verdict: STATUS", then "FAIL: …" and "NOT MEASURED: …" lines
    verdict = f"<li><b>{_e(first.removesuffix(status))}<span class=\"{STATUS_CLASS[status]}\">{_e(status)}</span></b></li>"
    verdict += "".join(f"<li>{_status_words(line)}</li>" for line in rest)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Benchmark report: {_e(run['name'])}: {_e(status)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Benchmark report: {_e(run['name'])}: <span class=\"{STATUS_CLASS.get(status, '')}\">{_e(status)}</span></h1>",
        f"<ul class=\"verdict {_e(status.replace(' ', '_'))}\">{verdict}</ul>",
        _table(*tables.headline(report)),
        f"<p>Target <b>{_e(run['target'])}</b>, deploy artifact <b>{_e(run['deploy_artifact'])}</b>; {_e(tables.run_label(report))}; "
        f"{_e(data.get('dataset'))} test split, {data['images']} images; host {_e(host.get('cpu'))} "
        f"({_e(host.get('usable_cores'))} usable cores).</p>",
        f"<p class=\"note\">Created {_e(report['created'])}, pipeline {_e(report['pipeline_version'])}, "
        f"report schema {_e(report['schema_version'])}.</p>",
        "<h2>Formats</h2>",
        _table(*tables.summary(report)),
        f"<p class=\"note\">{_e(tables.SPEEDUP_NOTE)}</p>",
    ]
    if any(r["where"] == "device" for r in report["latency"]):
        parts += ["<h2>On the device</h2>", _table(*tables.devices(report)), f"<p class=\"note\">{_e(tables.DEVICE_NOTE)}</p>"]
    for title, png in figures.items():
        if png:
            parts.append(f"<figure><img alt=\"{_e(title)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">"
                         f"<figcaption class=\"note\">{_e(title)}</figcaption></figure>")
    parts += [
        "<h2>Accuracy through the stages</h2>",
        "<p class=\"note\">Each stage is compared with the stage it was made from: the largest loss is where accuracy goes.</p>",
        _table(*tables.stages(report)),
        "<h2>Gates</h2>",
        _table(*tables.gates(report)) if report["gates"] else "<p>No gates configured (benchmark.gates).</p>",
        "<h2>Checks</h2>",
        _table(*tables.checks(report)) if report["checks"] else "<p>No checks recorded (the export and target stages' manifests are missing).</p>",
        *_decisions(report),
        *_layer_error(report),
        *_where(report),
        "<h2>Target</h2>",
        _table(*tables.target(report)),
        "<h2>Latency details</h2>",
        _table(*tables.latency_details(report)),
        "<h2>Environment</h2>",
        _table(*tables.environment(report)),
        "<h2>Method</h2>",
        f"<p>{_e(tables.method(report))}</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _decisions(report: dict[str, Any]) -> list[str]:
    """Every automatic int8 choice: what it came to, the interval it rested on, and its recorded reason."""
    from pipeline.report import decisions

    if not report.get("decisions"):
        return []
    notes = "".join(f"<li>{_e(n)}</li>" for n in decisions.notes(report["decisions"]))
    return [f"<h2>{_e(decisions.TITLE)}</h2>", _table(*decisions.table(report["decisions"])), f"<ul class=\"note\">{notes}</ul>"]


def _layer_error(report: dict[str, Any]) -> list[str]:
    """The int8-error-per-layer section: per int8 artifact a table, a note and a bar plot (nothing without numbers)."""
    from pipeline.report import layer_error

    found = layer_error.artifacts(report)
    if not found:
        return []
    parts = [f"<h2>{_e(layer_error.TITLE)}</h2>"]
    for key, info in found.items():
        title = f"{layer_error.TITLE}: {layer_error.heading(key)}"
        parts.append(f"<h3>{_e(layer_error.heading(key))}</h3>")
        if rows := layer_error.table(info):
            parts.append(_table(*rows))
        parts.append(f"<p class=\"note\">{_e(layer_error.note(key, info))}</p>")
        if png := layer_error.figure(info):
            parts.append(f"<figure><img alt=\"{_e(title)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">"
                         f"<figcaption class=\"note\">{_e(title)}</figcaption></figure>")
    return parts


def _where(report: dict[str, Any]) -> list[str]:
    """Where accuracy and time go: per int8 artifact its worst nodes, SQNR beside ms, and what each column rests on."""
    from pipeline.report import layer_error, where

    if not report.get("where"):
        return []
    parts = [f"<h2>{_e(where.TITLE)}</h2>"]
    for key, info in report["where"].items():
        parts.append(f"<h3>{_e(layer_error.heading(key))}</h3>")
        if rows := where.table(info):
            parts.append(_table(*rows))
        parts += [f"<p class=\"note\">{_status_words(n)}</p>" for n in where.notes(info)]
    return parts


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_status_words(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status_words(text: str) -> str:
    """Escaped text whose leading status word (PASS, FAIL, NOT MEASURED…) is coloured; the word itself stays."""
    for word, cls in sorted(STATUS_CLASS.items(), key=lambda kv: -len(kv[0])):
        if text == word or text.startswith((word + ":", word + " ")):
            return f'<span class="{cls}">{_e(word)}</span>{_e(text[len(word):])}'
    return _e(text)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)
