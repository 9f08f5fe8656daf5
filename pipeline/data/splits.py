"""The data stage's recorded splits read back: as a Dataset (``split_dataset``), as arrays (``load_split``), and
the shape a DataConfig gives (``dataset_shape``). Uses torch; ``pipeline.data`` re-exports these lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pipeline.artifacts import read_json
from pipeline.data.preprocess import Preprocess, normalise, to_unit_nchw
from pipeline.data.sources import STREAMED, load_raw
from pipeline.errors import PipelineError
from pipeline.stages import SPLIT_FILE

SPLITS = ("train", "val", "test", "calibration")


class ArrayDataset(TensorDataset):
    """Preprocessed images and labels held in memory (the small bundled datasets)."""

    workers = 0  # indexing a tensor needs no worker processes


def read_split_info(data_dir: Path) -> dict:
    path = Path(data_dir) / SPLIT_FILE
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run the data stage first (python -m pipeline run <recipe> --until data)")
    return read_json(path)


def preprocess_of(info: dict) -> Preprocess:
    return Preprocess.from_dict(info["preprocess"])


def is_streamed(info: dict) -> bool:
    return info["dataset"] in STREAMED


def split_dataset(data_dir: Path, which: str, *, augment: list[str] | None = None, workers: int = 0) -> Dataset:
    """One recorded split as a Dataset of (C×H×W float32 preprocessed image, label).

    ``augment`` (crop / flip) asks for per-image training augmentation where images stream from
    files; in-memory data is augmented per batch by the training loop instead (``train.loop.Augment``).
    """
    _check_split(which)
    info = read_split_info(data_dir)
    if not is_streamed(info):
        return ArrayDataset(*(torch.from_numpy(a) for a in load_split(data_dir, which)))
    from pipeline.data.folder import ImageFiles, eval_transform, train_transform

    pre = preprocess_of(info)
    norm = (pre.mean, pre.std)
    if augment:
        transform = train_transform(pre.image_size, pre.channels, norm, augment)
    else:
        transform = eval_transform(pre.image_size, pre.channels, norm)
    return ImageFiles(Path(info["root"]).expanduser(), info["files"][which], transform, random=bool(augment),
                      workers=workers, fingerprint=info["files_sha256"][which])


def load_split(data_dir: Path, which: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed float32 N×C×H×W images and int64 labels of one recorded split (its first ``limit``), as arrays."""
    _check_split(which)
    info = read_split_info(data_dir)
    if is_streamed(info):
        dataset = split_dataset(data_dir, which)
        if limit is not None:
            dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
        return _stack(dataset, tuple(info["input_shape"]))
    raw = load_raw(info["dataset"], info["root"])
    idx = np.asarray(info["indices"][which], dtype=np.int64)[:limit]
    if len(raw.labels) != info["num_images"]:
        raise PipelineError(
            f"data: {info['dataset']} now has {len(raw.labels)} images, the split recorded {info['num_images']}; "
            "re-run the data stage (--from data)"
        )
    pre = preprocess_of(info)
    x = normalise(to_unit_nchw(raw.images[idx], pre.image_size, pre.channels), pre)
    return x.numpy(), raw.labels[idx]


def _stack(dataset: Dataset, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [np.zeros((0, *shape), np.float32)], [np.zeros((0,), np.int64)]
    for x, y in DataLoader(dataset, batch_size=64):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _check_split(which: str) -> None:
    if which not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {which!r}")


def dataset_shape(data_cfg) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) after preprocessing and the class count, from a DataConfig, without running the stage."""
    if data_cfg.dataset in STREAMED:
        from pipeline.data.folder import first_image_side, list_folder

        index = list_folder(data_cfg.root, warn=lambda line: None)
        size = data_cfg.image_size or first_image_side(index)
        return (data_cfg.channels or 3, size, size), len(index.class_names)
    raw = load_raw(data_cfg.dataset, data_cfg.root)
    h, w, c = raw.shape
    size = data_cfg.image_size or h
    return (data_cfg.channels or c, size, size), len(raw.class_names)

