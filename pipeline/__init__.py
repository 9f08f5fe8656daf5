"""Edge deployment pipeline: distil a student from a teacher, quantise it, export it, measure it.

Kept import-light on purpose: the on-device runner (`pipeline.device`) imports this
package on boards that have numpy and a TFLite runtime but no torch.
"""

__version__ = "0.1.0"
