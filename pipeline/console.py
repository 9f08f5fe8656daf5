"""The one console every stage prints progress to (stderr, so stdout stays for what a command outputs).

A leaf: the run loop and every stage import it from here, never from ``pipeline.run``, so a stage
does not import the loop that runs it.
"""

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)
