"""Report: report.json (versioned, closed schema written beside it), report.md and a self-contained report.html.

``model`` defines the layout (pydantic: validation and the JSON Schema; its rows and machines in ``model_rows``),
``schema`` its stdlib-only keys, ``build`` assembles it (device rows, gates, headline, verdict) with ``checks``
(the target section and every check, from the export and target stages' typed metrics), ``device_results`` finds and
checks the boards' results files, ``tables`` holds the
text of every format, ``markdown``/``html``/``plots``/``console`` render it, ``compare`` sets two
runs side by side for CI.
"""
