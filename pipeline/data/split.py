"""Deterministic train/val/test split from a seed, and the calibration subset export uses.

The official test split is kept when the dataset has one (Fashion-MNIST, CIFAR); otherwise
``test_fraction`` of the images, stratified by a seeded permutation, is held out.
"""

from __future__ import annotations

import hashlib

import numpy as np

from pipeline.data.sources import RawDataset


def split_indices(
    raw: RawDataset,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    max_train: int | None,
    max_test: int | None,
    calibration_size: int,
) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    n = len(raw.labels)
    if raw.test_start is not None:
        pool = rng.permutation(raw.test_start)
        test = rng.permutation(np.arange(raw.test_start, n))
    else:
        perm = rng.permutation(n)
        n_test = max(1, int(round(test_fraction * n)))
        test, pool = perm[:n_test], perm[n_test:]
    n_val = int(round(val_fraction * len(pool)))
    val, train = pool[:n_val], pool[n_val:]
    if max_train is not None:
        train = train[:max_train]
    if max_test is not None:
        test = test[:max_test]
    calibration = rng.permutation(train)[: min(calibration_size, len(train))]
    return {name: sorted(int(i) for i in idx) for name, idx in
            (("train", train), ("val", val), ("test", test), ("calibration", calibration))}


def indices_hash(indices: list[int]) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def dataset_hash(raw: RawDataset) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(raw.images).tobytes())
    h.update(raw.labels.astype(np.int64).tobytes())
    return h.hexdigest()
