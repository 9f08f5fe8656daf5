"""The datasets and loaders a training stage needs, replayed from the data stage's folder.

``make_loader`` is the one way a training loop gets batches: it splits the global batch and the
data across the ranks (DistributedSampler, seeded from the recorded seed) and pairs each index
with its own augmentation seed where images stream from files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler, Subset

from pipeline.data import is_streamed, preprocess_of, read_split_info, split_dataset
from pipeline.errors import PipelineError
from pipeline.train.distributed import all_gather, current

MONITOR_FALLBACK = 256  # training images watched per epoch when there is no validation split


class Augment:
    """Random crop with zero-pixel padding (size/8, 4 px at 32×32) and horizontal flip, on normalised tensors."""

    def __init__(self, kinds: list[str], pad_value: torch.Tensor):
        self.crop = "crop" in kinds
        self.flip = "flip" in kinds
        self.pad_value = pad_value.view(1, -1, 1, 1)  # the normalised value of a black pixel

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.crop:
            pad = max(1, h // 8)
            padded = self.pad_value.expand(b, c, h + 2 * pad, w + 2 * pad).clone()
            padded[:, :, pad : pad + h, pad : pad + w] = x
            dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
            dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
            rows = (dy.view(b, 1) + torch.arange(h)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
            x = padded.gather(2, rows)
            cols = (dx.view(b, 1) + torch.arange(w)).view(b, 1, 1, w).expand(b, c, h, w)
            x = x.gather(3, cols)
        if self.flip:
            mask = torch.rand(b, generator=gen) < 0.5
            x = torch.where(mask.view(b, 1, 1, 1), x.flip(3), x)
        return x


@dataclass
class TrainingData:
    info: dict
    train: Dataset  # what students train on (streamed folders augment each image here)
    train_plain: Dataset  # the same images without augmentation (teacher-side phases, examples)
    val: Dataset
    test: Dataset
    batch_augment: Augment | None  # in-memory data is augmented per batch by the training loop instead

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.info["input_shape"])

    @property
    def num_classes(self) -> int:
        return self.info["num_classes"]

    def example(self, n: int = 2) -> torch.Tensor:
        """The first ``n`` training images, preprocessed (what tracing and shape probes run on)."""
        return torch.stack([self.train_plain[i][0] for i in range(min(n, len(self.train_plain)))])

    def checkpoint_meta(self) -> dict:
        """What every checkpoint records about the data it was made for."""
        return {"preprocess": self.info["preprocess"], "class_names": self.info["class_names"], "input_shape": self.info["input_shape"]}


def training_data(data_dir: Path, data_cfg=None) -> TrainingData:
    """The recorded splits; ``data_cfg`` (the run's ``data`` section) gives the augmentation and worker count."""
    augment = list(data_cfg.augment) if data_cfg is not None else []
    workers = data_cfg.workers if data_cfg is not None else 0
    info = read_split_info(data_dir)
    streamed = is_streamed(info)
    plain = split_dataset(data_dir, "train", workers=workers)
    return TrainingData(
        info=info,
        train=split_dataset(data_dir, "train", augment=augment, workers=workers) if streamed and augment else plain,
        train_plain=plain,
        val=split_dataset(data_dir, "val", workers=workers),
        test=split_dataset(data_dir, "test", workers=workers),
        batch_augment=None if streamed or not augment else _batch_augment(info, augment),
    )


def _batch_augment(info: dict, kinds: list[str]) -> Augment:
    pre = preprocess_of(info)
    black = (0.0 - torch.tensor(pre.mean)) / torch.tensor(pre.std)  # the normalised value of a black pixel
    return Augment(kinds, black)


def val_or_test(data: TrainingData) -> Dataset:
    """Validation split for per-epoch monitoring; falls back to a slice of train when val is empty."""
    if len(data.val):
        return data.val
    return Subset(data.train_plain, range(min(MONITOR_FALLBACK, len(data.train_plain))))


class SeededSampler(Sampler):
    """Each index with a seed of its own, drawn from (seed, epoch, index): an image's augmentation
    then depends neither on the worker that decodes it nor on the number of workers or ranks."""

    def __init__(self, inner: Sampler, seed: int):
        self.inner, self.seed, self.epoch = inner, seed, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = (self.seed * 1_000_003 + self.epoch) * 1_000_000_007
        return ((int(i), (base + int(i)) % (1 << 63)) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)


class Loader(DataLoader):
    """A DataLoader whose worker errors stay one line: a ``PipelineError`` raised while decoding in a
    worker comes back wrapped in the worker's traceback; only its message is kept."""

    def __iter__(self):
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except PipelineError as exc:
                last = str(exc).strip().splitlines()[-1]
                raise PipelineError(last.partition("PipelineError: ")[2] or last) from None
            yield batch


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, shard: bool = True) -> Loader:
    """Batches of ``dataset`` for this process: with ``shard`` under torchrun, ``batch_size`` is the global
    batch and each of the N ranks takes batch_size / N images of a disjoint 1/N of the data per epoch
    (DistributedSampler seeded from ``seed``, the last < N images of a shuffled epoch dropped).
    ``shard=False`` gives one process's loader whatever the world size (work done on rank 0 alone)."""
    place = current()
    ranks = place.world_size if shard else 1
    if batch_size % ranks:
        raise PipelineError(f"data.batch_size: {batch_size} is the global batch and torchrun started {ranks} processes; "
                            f"make it a multiple of {ranks}")
    # generators of their own for the shuffle and for the loader's worker seeds, never the global RNG;
    # apart, so that a replayed epoch (replay_epoch) draws its shuffle alone from a reseeded generator
    gen = torch.Generator().manual_seed(seed)
    sampler: Sampler
    if ranks > 1:
        sampler = DistributedSampler(dataset, num_replicas=ranks, rank=place.rank, shuffle=shuffle, seed=seed, drop_last=True)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    if getattr(dataset, "random", False):
        sampler = SeededSampler(sampler, seed)
    workers = getattr(dataset, "workers", 0)
    return Loader(dataset, batch_size=batch_size // ranks, sampler=sampler, num_workers=workers, generator=gen,
                  pin_memory=place.device.type == "cuda", persistent_workers=workers > 0)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """A new shuffle (and new augmentation seeds) per epoch, the same on every rank."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def replay_epoch(loader: DataLoader, view: int, seed: int) -> None:
    """Start an epoch that repeats view ``view`` exactly: the same shards, order and per-image
    augmentation seeds each time the view comes round (``fit``'s ``views``)."""
    set_epoch(loader, view)  # DistributedSampler's shuffle and SeededSampler's seeds follow the epoch given
    inner = getattr(loader.sampler, "inner", loader.sampler)
    if isinstance(inner, RandomSampler):
        inner.generator.manual_seed(view_seed(seed, view))


def view_seed(seed: int, view: int, rank: int = 0) -> int:
    """The seed of view ``view`` of a replayed cycle (view 0 draws what an unreplayed first epoch draws)."""
    return seed + rank + 7919 * view


def sampled_indices(loader: DataLoader) -> list[int]:
    """The dataset indices this rank's loader yields in its current epoch."""
    return [i[0] if isinstance(i, tuple) else int(i) for i in loader.sampler]


def shard_record(loader: DataLoader) -> dict:
    """How the current epoch's images were shared among the ranks: per-rank counts, overlap, coverage."""
    if not current().distributed:  # (iterating a RandomSampler would advance its generator)
        n = len(loader.sampler)
        return {"world_size": 1, "images_per_rank": [n], "overlap": 0, "distinct": n, "dataset": len(loader.dataset)}
    shards = all_gather(sampled_indices(loader))
    union = set().union(*map(set, shards))
    return {"world_size": len(shards), "images_per_rank": [len(s) for s in shards],
            "overlap": sum(len(s) for s in shards) - len(union), "distinct": len(union), "dataset": len(loader.dataset)}
