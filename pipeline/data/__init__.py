"""Data: real datasets read from local files, a seeded split, preprocessing that travels with every artifact.

Later stages never re-decide anything about data: they call ``load_split(data_dir, which)``
on the data stage's folder, which replays the recorded split and preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.artifacts import read_json
from pipeline.data.preprocess import Preprocess, normalise, to_unit_nchw
from pipeline.data.sources import SOURCES, load_raw
from pipeline.errors import PipelineError

SPLIT_FILE = "split.json"
SPLITS = ("train", "val", "test", "calibration")


def read_split_info(data_dir: Path) -> dict:
    path = Path(data_dir) / SPLIT_FILE
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run the data stage first (python -m pipeline run <recipe> --until data)")
    return read_json(path)


def preprocess_of(info: dict) -> Preprocess:
    return Preprocess.from_dict(info["preprocess"])


def load_split(data_dir: Path, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed float32 N×C×H×W images and int64 labels of one recorded split."""
    if which not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {which!r}")
    info = read_split_info(data_dir)
    raw = load_raw(info["dataset"], info["root"])
    idx = np.asarray(info["indices"][which], dtype=np.int64)
    if len(raw.labels) != info["num_images"]:
        raise PipelineError(
            f"data: {info['dataset']} now has {len(raw.labels)} images, the split recorded {info['num_images']}; "
            "re-run the data stage (--from data)"
        )
    pre = preprocess_of(info)
    x = normalise(to_unit_nchw(raw.images[idx], pre.image_size, pre.channels), pre)
    return x.numpy(), raw.labels[idx]


def dataset_shape(data_cfg) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) after preprocessing and the class count, from a DataConfig, without running the stage."""
    raw = load_raw(data_cfg.dataset, data_cfg.root)
    h, w, c = raw.shape
    size = data_cfg.image_size or h
    return (data_cfg.channels or c, size, size), len(raw.class_names)


__all__ = ["SOURCES", "Preprocess", "dataset_shape", "load_split", "preprocess_of", "read_split_info"]
