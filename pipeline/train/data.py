"""The arrays and augmentation a training stage needs, replayed from the data stage's folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.data import load_split, preprocess_of, read_split_info
from pipeline.train.loop import Augment


@dataclass
class TrainingData:
    info: dict
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.info["input_shape"])

    @property
    def num_classes(self) -> int:
        return self.info["num_classes"]

    def augment(self, kinds: list[str]) -> Augment | None:
        if not kinds:
            return None
        pre = preprocess_of(self.info)
        black = (0.0 - torch.tensor(pre.mean)) / torch.tensor(pre.std)
        return Augment(kinds, black)

    def checkpoint_meta(self) -> dict:
        """What every checkpoint records about the data it was made for."""
        return {"preprocess": self.info["preprocess"], "class_names": self.info["class_names"], "input_shape": self.info["input_shape"]}


def training_data(data_dir: Path) -> TrainingData:
    return TrainingData(
        info=read_split_info(data_dir),
        train=load_split(data_dir, "train"),
        val=load_split(data_dir, "val"),
        test=load_split(data_dir, "test"),
    )


def val_or_test(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """Validation split for per-epoch monitoring; falls back to a slice of train when val is empty."""
    x, y = data.val
    return (x, y) if len(y) else (data.train[0][:256], data.train[1][:256])
