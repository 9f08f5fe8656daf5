"""Quantisation-aware fine-tuning of the distilled student, the fp32 teacher still supervising."""
