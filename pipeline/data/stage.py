"""Data stage: read the dataset, fix the split and the calibration subset, record the preprocessing."""

from __future__ import annotations

import numpy as np

from pipeline.artifacts import atomic_write_bytes, atomic_write_json
from pipeline.data import SPLIT_FILE, load_split
from pipeline.data.preprocess import Preprocess, channel_stats, to_unit_nchw
from pipeline.data.sources import load_raw
from pipeline.data.split import dataset_hash, indices_hash, split_indices
from pipeline.errors import PipelineError


def run(ctx) -> dict:
    cfg = ctx.cfg.data
    raw = load_raw(cfg.dataset, cfg.root)
    h, w, c = raw.shape
    if h != w and cfg.image_size is None:
        raise PipelineError(f"data.image_size: images are {h}×{w}; set a square size to resize to")
    indices = split_indices(
        raw,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        max_train=cfg.max_train,
        max_test=cfg.max_test,
        calibration_size=cfg.calibration_size,
    )
    if not indices["calibration"]:
        raise PipelineError("data.calibration_size: the calibration subset is empty (no training images)")
    if cfg.calibration_size > len(indices["calibration"]):
        from pipeline.run import console

        console.print(f"[yellow]warning: data.calibration_size {cfg.calibration_size} is more than the "
                      f"{len(indices['train'])} training images: calibrating on all of them[/yellow]")
    size, channels = cfg.image_size or h, cfg.channels or c
    _check_memory(len(indices["train"]), channels, size)
    if cfg.mean is None or cfg.std is None:
        mean, std = channel_stats(to_unit_nchw(raw.images[indices["train"]], size, channels))
    mean, std = tuple(cfg.mean or mean), tuple(cfg.std or std)
    for key, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise PipelineError(f"data.{key}: {len(values)} values for {channels}-channel images; give one per channel")
    pre = Preprocess(size, channels, mean, std)
    info = {
        "dataset": cfg.dataset,
        "root": cfg.root,
        "num_images": len(raw.labels),
        "num_classes": len(raw.class_names),
        "class_names": list(raw.class_names),
        "input_shape": list(pre.input_shape),
        "preprocess": pre.to_dict(),
        "dataset_sha256": dataset_hash(raw),
        "indices": indices,
        "indices_sha256": {k: indices_hash(v) for k, v in indices.items()},
    }
    atomic_write_json(ctx.out / SPLIT_FILE, info)
    calib, _ = load_split(ctx.out, "calibration")
    buf = _npy_bytes(calib.astype(np.float32))
    atomic_write_bytes(ctx.out / "calibration.npy", buf)
    return {
        "dataset": cfg.dataset,
        "train": len(indices["train"]),
        "val": len(indices["val"]),
        "test": len(indices["test"]),
        "calibration": len(indices["calibration"]),
        "input_shape": list(pre.input_shape),
        "calibration_sha256": info["indices_sha256"]["calibration"],
    }


def _check_memory(n_train: int, channels: int, size: int) -> None:
    """The training split is preprocessed in memory as float32: refuse a size that cannot fit before numpy tries."""
    import psutil

    need, free = n_train * channels * size * size * 4, psutil.virtual_memory().available
    if need > free:
        from pipeline.fs import human_bytes

        raise PipelineError(f"data.image_size: {size} needs {human_bytes(need)} for the {n_train} training images as "
                            f"float32, more than the {human_bytes(free)} of memory available; lower it or set data.max_train")


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    f = io.BytesIO()
    np.save(f, arr)
    return f.getvalue()
