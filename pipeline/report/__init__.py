"""Report: report.json (versioned schema), report.md and a self-contained report.html from the benchmark's results.

``schema`` (stdlib only) defines the JSON layout, ``build`` assembles it and merges device rows,
``markdown``/``html``/``plots``/``console`` render it, ``compare`` sets two runs side by side.
"""
