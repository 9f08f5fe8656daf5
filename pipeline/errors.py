"""One exception type for mistakes a user can fix: the CLI prints it as one line, exit code 2."""


class PipelineError(Exception):
    """A user-facing error: the message names the file, config key or tool, and what to do."""

    exit_code = 2


class GateFailure(PipelineError):
    """A benchmark gate was violated: the report is written, the run exits 3."""

    exit_code = 3
