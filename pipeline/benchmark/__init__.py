"""Benchmark: batch-1 latency and top-1 accuracy of the teacher, the student and every exported artifact.

``latency`` is the measurement method (numpy + stdlib, shared with the on-device runner),
``accuracy`` the stage chain, ``gates`` the pass/fail rules, ``stage`` the pipeline stage.
"""
