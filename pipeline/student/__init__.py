"""The given-student stage of ``python -m pipeline export MODEL`` (no teacher, no training)."""
