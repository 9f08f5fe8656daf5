"""Benchmark: batch-1 latency and top-1 accuracy of the teacher, the student and every exported artifact.

``latency`` is the measurement method (numpy + stdlib, shared with the on-device runner),
``rows`` a latency row's identity and precision text (stdlib, read by the report and the board runner too),
``accuracy`` the stage chain, ``gates`` the pass/fail rules, ``subjects`` what the stage scores and reads of
the run, ``stage`` the pipeline stage.
"""

# bounds on the measurement settings, read by the host config and the board runner alike
MAX_MIN_SECONDS = 3600.0  # min_seconds per row: an hour is already a long benchmark; more is a typo
MAX_RUNS = 1_000_000  # min_runs / warmup: beyond this a row runs for hours, however small the model
