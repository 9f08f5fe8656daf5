"""Data stage: read the dataset, fix the split and the calibration subset, record the preprocessing.

In-memory datasets record the split as indices; a streamed image folder records it as file
lists (with each file's label) and the sha256 of each list, after one pass that skips unreadable
files (counted in the metrics, named in one warning line). Either way ``calibration.npy`` holds
the calibration subset preprocessed, for the converters.
"""

from __future__ import annotations

import io

import numpy as np

from pipeline.artifacts import atomic_write_bytes, atomic_write_json
from pipeline.data import SPLIT_FILE, load_split
from pipeline.data.preprocess import Preprocess, channel_stats, to_unit_nchw
from pipeline.data.sources import STREAMED, load_raw
from pipeline.data.split import dataset_hash, indices_hash, split_indices
from pipeline.errors import PipelineError, printable
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import DataMetrics
from pipeline.stages import CALIBRATION_FILE


def run(ctx: StageContext) -> DataMetrics:
    cfg = ctx.cfg.data
    info, extra = (_streamed if cfg.dataset in STREAMED else _in_memory)(cfg)
    indices = info["indices"]
    if not indices["calibration"]:
        raise PipelineError("data.calibration_size: the calibration subset is empty (no training images)")
    if cfg.calibration_size > len(indices["calibration"]):
        from pipeline.console import console

        console.print(f"[yellow]warning: data.calibration_size {cfg.calibration_size} is more than the "
                      f"{len(indices['train'])} training images: calibrating on all of them[/yellow]")
    pre = Preprocess.from_dict(info["preprocess"])
    for key, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) != pre.channels:
            raise PipelineError(f"data.{key}: {len(values)} values for {pre.channels}-channel images; give one per channel")
    info["indices_sha256"] = {k: indices_hash(v) for k, v in indices.items()}
    atomic_write_json(ctx.out / SPLIT_FILE, info)
    calib, _ = load_split(ctx.out, "calibration")
    atomic_write_bytes(ctx.out / CALIBRATION_FILE, _npy_bytes(calib.astype(np.float32)))
    return DataMetrics(
        dataset=cfg.dataset,
        train=len(indices["train"]),
        val=len(indices["val"]),
        test=len(indices["test"]),
        calibration=len(indices["calibration"]),
        input_shape=list(pre.input_shape),
        calibration_sha256=info["indices_sha256"]["calibration"],
        **extra,
    )


def _split(cfg, labels_source) -> dict[str, list[int]]:
    return split_indices(labels_source, seed=cfg.seed, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                         max_train=cfg.max_train, max_test=cfg.max_test, calibration_size=cfg.calibration_size)


def _in_memory(cfg) -> tuple[dict, dict]:
    raw = load_raw(cfg.dataset, cfg.root)
    h, w, c = raw.shape
    if h != w and cfg.image_size is None:
        raise PipelineError(f"data.image_size: images are {h}×{w}; set a square size to resize to")
    indices = _split(cfg, raw)
    size, channels = cfg.image_size or h, cfg.channels or c
    _check_memory(len(indices["train"]), channels, size)
    if cfg.mean is None or cfg.std is None:
        mean, std = channel_stats(to_unit_nchw(raw.images[indices["train"]], size, channels))
    pre = Preprocess(size, channels, tuple(cfg.mean or mean), tuple(cfg.std or std))
    return {
        "dataset": cfg.dataset,
        "root": cfg.root,
        "num_images": len(raw.labels),
        "num_classes": len(raw.class_names),
        "class_names": list(raw.class_names),
        "input_shape": list(pre.input_shape),
        "preprocess": pre.to_dict(),
        "dataset_sha256": dataset_hash(raw),
        "indices": indices,
    }, {}


def _streamed(cfg) -> tuple[dict, dict]:
    """An image folder: list, read each file once (skipping unreadable ones), split the readable ones."""
    from dataclasses import replace

    from pipeline.data.folder import eval_transform, files_hash, first_image_side, list_folder, mean_std, scan, skipped_line
    from pipeline.console import console

    def warn(line: str) -> None:
        console.print(printable(line), style="yellow", markup=False)

    index = list_folder(cfg.root, warn=warn)
    size, channels = cfg.image_size or first_image_side(index), cfg.channels or 3
    result = scan(index, size, channels, cfg.workers)
    if result.skipped:
        warn(skipped_line(result.skipped))
    files = [index.files[i] for i in result.readable]
    labels = index.labels[result.readable]
    test_start = None if index.test_start is None else int((result.readable < index.test_start).sum())
    readable = replace(index, files=tuple(files), labels=labels, test_start=test_start)
    indices = _split(cfg, readable)
    if cfg.mean is None or cfg.std is None:
        mean, std = mean_std(result.sums[indices["train"]], channels)
    pre = Preprocess(size, channels, tuple(cfg.mean or mean), tuple(cfg.std or std))
    per_split = {k: [[files[i], int(labels[i])] for i in v] for k, v in indices.items()}
    return {
        "dataset": cfg.dataset,
        "root": str(index.root),
        "num_images": len(files),
        "num_classes": len(index.class_names),
        "class_names": list(index.class_names),
        "input_shape": list(pre.input_shape),
        "preprocess": pre.to_dict(),
        "eval_transform": repr(eval_transform(size, channels, None)),
        "dataset_sha256": files_hash(files, result.sha256, labels),
        "skipped": [{"file": f, "reason": why} for f, why in result.skipped],
        "skipped_outside_root": {"count": len(index.outside), "first": list(index.outside[:3])},
        "indices": indices,
        "files": per_split,
        "files_sha256": {k: files_hash([files[i] for i in v], [result.sha256[i] for i in v], labels[v])
                         for k, v in indices.items()},
    }, {"skipped_images": len(result.skipped), "skipped_outside_root": len(index.outside)}


def _check_memory(n_train: int, channels: int, size: int) -> None:
    """The training split is preprocessed in memory as float32: refuse a size that cannot fit before numpy tries."""
    import psutil

    need, free = n_train * channels * size * size * 4, psutil.virtual_memory().available
    if need > free:
        from pipeline.fs import human_bytes

        raise PipelineError(f"data.image_size: {size} needs {human_bytes(need)} for the {n_train} training images as "
                            f"float32, more than the {human_bytes(free)} of memory available; lower it or set data.max_train")


def _npy_bytes(arr: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, arr)
    return f.getvalue()
