"""The data stage's calibration subset, read back by whoever quantises (export) or smoke-tests a given file
(``benchmark``'s artifacts stage): numpy only, so neither needs the other to read it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.stages import CALIBRATION_FILE


def load_calibration(data_dir: Path, input_shape: tuple[int, ...]) -> tuple[np.ndarray, Path]:
    """The data stage's calibration subset (float32 N×C×H×W, normalised); missing or empty is the user's to fix."""
    path = Path(data_dir) / CALIBRATION_FILE
    fix = "re-run the data stage (python -m pipeline run <recipe> --from data)"
    if not path.is_file() or path.stat().st_size == 0:
        raise PipelineError(f"export: calibration subset {path} is missing/empty: {fix}")
    try:
        calib = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PipelineError(f"export: calibration subset {path} is unreadable ({exc}): {fix}") from None
    if calib.ndim != 4 or len(calib) == 0:
        raise PipelineError(f"export: calibration subset {path} is missing/empty: array of shape {calib.shape}; {fix}")
    if tuple(calib.shape[1:]) != tuple(input_shape):
        raise PipelineError(f"export: calibration subset {path} has images {calib.shape[1:]}, the data is {tuple(input_shape)}: {fix}")
    return np.ascontiguousarray(calib, dtype=np.float32), path
