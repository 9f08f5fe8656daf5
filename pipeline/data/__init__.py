"""Data: real datasets read from local files, a seeded split, preprocessing that travels with every artifact.

Later stages never re-decide anything about data: they replay the data stage's folder, as a
Dataset (``split_dataset``: what training and evaluation iterate) or as one array
(``load_split``: the calibration subset and test images export and benchmark need). Small
bundled datasets are held in memory; image folders stream from their files (``folder.py``).

Importing this package stays light (the names of ``sources`` only): config validation checks
``data.dataset`` against ``DATASETS`` without torch; everything else is ``splits``, imported
on first use.
"""

from __future__ import annotations

from typing import Any

from pipeline.data.sources import DATASETS, SOURCES, STREAMED

_FROM_SPLITS = ("SPLIT_FILE", "SPLITS", "ArrayDataset", "Preprocess", "dataset_shape", "is_streamed", "load_split",
                "preprocess_of", "read_split_info", "split_dataset")


def __getattr__(name: str) -> Any:
    """The torch side (``pipeline.data.splits``), imported when one of its names is first asked for (PEP 562)."""
    if name in _FROM_SPLITS:
        from pipeline.data import splits

        return getattr(splits, name)
    raise AttributeError(f"module 'pipeline.data' has no attribute '{name}'")


__all__ = ["DATASETS", "SOURCES", "STREAMED", *_FROM_SPLITS]
