"""Image folders that stream: listed once, decoded lazily in DataLoader workers (issue 16).

Layout: torchvision's ImageFolder, one sub-folder per class; ``train/`` and ``test/`` sub-folders,
when both exist, give an official test split. The data stage (``scan``) lists the files and
decodes each once, in ``data.workers`` processes: a corrupt, truncated or unreadable file is
skipped and counted, every readable file's sha256 and per-channel pixel sums (for mean/std) are
kept, no pixels are. Training then reads the recorded file lists through ``ImageFiles``, so
memory holds paths, never the images: peak memory does not grow with the folder.

Decoding and transforms are torchvision's ImageFolder's: PIL, then ``transforms.v2``, chosen by resolution:
photos (side > ``PHOTO_MIN_SIZE``) train with RandomResizedCrop + flip and evaluate with
Resize(side / 0.875) + CenterCrop(side), the ImageNet recipe; small images train with the CIFAR
pad-crop (zero padding of side/8) + flip and evaluate with Resize + CenterCrop at their side.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.errors import PipelineError
from pipeline.fs import resolves_inside

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
PHOTO_MIN_SIZE = 64  # above this side, the photo transforms; at or below, the small-image (CIFAR) ones
CENTER_CROP_FRACTION = 0.875  # evaluation resizes photos to side / 0.875, then crops the centre
SHOWN_SKIPPED = 3  # the warning names this many skipped files
WIDE_GREY = ("I;16", "I;16B", "I;16L", "I")  # PIL's modes of a 16-bit grey PNG: 0..65535, scaled to 0..255


@dataclass(frozen=True)
class FileIndex:
    """Image files of a folder in label order (paths relative to the root); ``test_start`` as in RawDataset."""

    root: Path
    files: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    test_start: int | None = None
    outside: tuple[str, ...] = ()  # images (or class folders) linking outside the root: skipped, their resolved paths


def list_folder(root: str | Path | None, warn=print) -> FileIndex:
    """The image files under ``root`` by class; an empty class folder is left out (one warning line),
    fewer than two classes is one error line, a test/ class that train/ lacks is one error line. An image (or
    a class folder) that is a symlink resolving outside ``root`` is skipped with one warning line: nothing
    outside the folder the recipe names is read (the data manifest records how many, and the first targets)."""
    if root is None:
        raise PipelineError("data.root: image_folder needs a folder with one sub-folder per class")
    folder = Path(root).expanduser().resolve()  # recorded: later stages read the files from any working folder
    splits = [folder / "train", folder / "test"] if (folder / "train").is_dir() and (folder / "test").is_dir() else [folder]
    if not splits[0].is_dir():
        raise PipelineError(f"data.root: {folder} is not a folder")
    names = sorted(p.name for p in splits[0].iterdir() if p.is_dir())
    if len(splits) == 2 and (extra := sorted({p.name for p in splits[1].iterdir() if p.is_dir()} - set(names))):
        raise PipelineError(f"data.root: test/ has class folder(s) that train/ lacks: {', '.join(extra)}; the model cannot "
                            f"learn a class it never sees: add train/{extra[0]}/ or remove test/{extra[0]}/")
    outside: list[str] = []

    def inside(p: Path) -> bool:
        if resolves_inside(p, folder):
            return True
        outside.append(str(p.resolve()))
        return False

    images = {
        name: [sorted(p.relative_to(folder).as_posix() for p in (split / name).rglob("*")
                      if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and inside(p)) for split in splits]
        for name in names
    }
    if outside:
        shown = ", ".join(outside[:SHOWN_SKIPPED]) + (f" and {len(outside) - SHOWN_SKIPPED} more" if len(outside) > SHOWN_SKIPPED else "")
        warn(f"warning: data.root: skipped {len(outside)} image(s) linking outside {folder}: {shown}; copy them in "
             "(or point data.root at the folder holding them) to use them")
    empty = [name for name, per_split in images.items() if not any(per_split)]
    if empty:
        warn(f"warning: data.root: class folder(s) without images left out: {', '.join(empty)}")
    classes = [name for name in images if name not in empty]
    if len(classes) < 2:
        found = f"only '{classes[0]}'" if classes else "none"
        raise PipelineError(f"data.root: a classifier needs at least two class folders with images under {splits[0]}, "
                            f"found {found} (layout: ROOT/<class>/<image>, or ROOT/train/<class>/ and ROOT/test/<class>/)")
    files, labels, test_start = [], [], None
    for s in range(len(splits)):
        if s == 1:
            test_start = len(files)
        for label, name in enumerate(classes):
            files += images[name][s]
            labels += [label] * len(images[name][s])
    return FileIndex(folder, tuple(files), np.asarray(labels, dtype=np.int64), tuple(classes), test_start, tuple(outside))


def decode(source: Path | bytes):
    """An image file (path or its bytes) → RGB PIL image, as torchvision's ImageFolder loads it (its
    ``pil_loader``); a corrupt, truncated or unknown file raises ValueError with PIL's reason.
    (torchvision 0.29 deprecates its own ``torchvision.io`` decoders, so PIL it is.)"""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # PIL only warns between 1× and 2× its pixel limit: a bomb all the same
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with img:
            if img.mode in WIDE_GREY:  # 16-bit grey: convert("RGB") would clip every value above 255 to white
                img.load()
                wide = np.asarray(img, dtype=np.float64)
                return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
            return img.convert("RGB")  # decodes now: a truncated file fails here, not mid-transform
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # KiBs claiming 10⁹ pixels
        raise ValueError(f"decompression bomb: {str(exc)[:100]}") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for bad files
        raise ValueError(str(exc).split(" <_io.")[0].split(" '/")[0].strip()[:120] or type(exc).__name__) from None


def is_photo(image_size: int) -> bool:
    return image_size > PHOTO_MIN_SIZE


def eval_transform(image_size: int, channels: int, normalise: tuple | None):
    """Resize + CenterCrop (+ grey) → float in [0, 1] (+ normalised with ``normalise`` = (mean, std))."""
    from torchvision.transforms import v2

    resize = round(image_size / CENTER_CROP_FRACTION) if is_photo(image_size) else image_size
    steps = [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(steps + _finish(channels, normalise))


def train_transform(image_size: int, channels: int, normalise: tuple, augment: list[str]):
    """The training augmentation that fits the resolution (module docstring); ``augment`` picks crop / flip."""
    from torchvision.transforms import v2

    if "crop" in augment and is_photo(image_size):
        steps = [v2.RandomResizedCrop(image_size, antialias=True)]
    else:
        steps = list(eval_transform(image_size, channels, None).transforms[:2])
        if "crop" in augment:
            steps.append(v2.RandomCrop(image_size, padding=max(1, image_size // 8), fill=0))
    if "flip" in augment:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _finish(channels, normalise))


def _finish(channels: int, normalise: tuple | None) -> list:
    from torchvision.transforms import v2

    steps = [v2.Grayscale(1)] if channels == 1 else []  # ITU-R 601 luma, as preprocess.to_unit_nchw
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if normalise is not None:
        steps.append(v2.Normalize(list(normalise[0]), list(normalise[1])))
    return steps


class ImageFiles(Dataset):
    """(image C×S×S float, label) per recorded file, decoded when asked (in a DataLoader worker).

    With ``random`` transforms an item is asked for as ``(index, seed)`` (pipeline.train.data's
    SeededSampler) and the transform draws from that seed alone, so an image's augmentation does
    not depend on which worker decodes it, how many workers there are, or the world size.
    """

    def __init__(self, root: Path, files: list[tuple[str, int]], transform, *, random: bool = False,
                 workers: int = 0, fingerprint: str = ""):
        self.root = Path(root)
        self.files = [str(f) for f, _ in files]
        self.labels = np.asarray([int(label) for _, label in files], dtype=np.int64)
        self.transform = transform
        self.random = random
        self.workers = workers
        self._fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        path = self.root / self.files[index]
        try:
            image = decode(path)
        except ValueError as exc:
            raise PipelineError(f"{path}: unreadable now ({exc}) though it read at the data stage; "
                                "re-run the data stage (--from data)") from None
        if self.random:
            with torch.random.fork_rng(devices=[]):
                # the CPU generator alone (what the transforms draw from): torch.manual_seed also reseeds every
                # accelerator's and costs ~0.1 ms, which measured as a 0.8× loader against torchvision's
                torch.default_generator.manual_seed(seed)
                x = self.transform(image)
        else:
            x = self.transform(image)
        return x, int(self.labels[index])

    def fingerprint(self) -> str:
        """What identifies the items: the files' content hashes and the transform (teacher-side cache keys)."""
        return hashlib.sha256(f"{self._fingerprint}\n{self.transform!r}".encode()).hexdigest()


class _Reader(Dataset):
    """One pass of the data stage: per file, its sha256, and per-channel sum and sum of squares of
    its pixels in [0, 1] after the evaluation crop (or why it could not be read)."""

    def __init__(self, root: Path, files: tuple[str, ...], transform):
        self.root, self.files, self.transform = root, files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            data = (self.root / self.files[i]).read_bytes()
            x = self.transform(decode(data)).double()
        except (OSError, ValueError) as exc:
            return i, None, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        pixels = x[0].numel()
        return i, hashlib.sha256(data).hexdigest(), (x.sum(dim=(1, 2)).numpy(), (x * x).sum(dim=(1, 2)).numpy(), pixels)


@dataclass
class ScanResult:
    readable: np.ndarray  # indices into the FileIndex's files
    sha256: list[str]  # per readable file
    sums: np.ndarray  # per readable file: C sums, C sums of squares, pixel count
    skipped: list[tuple[str, str]]  # (file, reason)


def scan(index: FileIndex, image_size: int, channels: int, workers: int) -> ScanResult:
    """Decode every file once (in ``workers`` processes) at the evaluation crop, keeping only small per-file records."""
    from tqdm import tqdm

    reader = _Reader(index.root, index.files, eval_transform(image_size, channels, None))
    loader = DataLoader(reader, batch_size=32, num_workers=workers, collate_fn=list)
    ok, hashes, sums, skipped = [], [], [], []
    for batch in tqdm(loader, desc="data: reading images", leave=False, disable=None, dynamic_ncols=True):
        for i, sha, stats in batch:
            if sha is None:
                skipped.append((index.files[i], stats))
                continue
            ok.append(i)
            hashes.append(sha)
            sums.append(np.concatenate([stats[0], stats[1], [stats[2]]]))
    return ScanResult(np.asarray(ok, dtype=np.int64), hashes, np.asarray(sums).reshape(len(ok), 2 * channels + 1), skipped)


def mean_std(sums: np.ndarray, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over every pixel of the given files (rows of ``ScanResult.sums``)."""
    total = sums.sum(axis=0)
    n = total[-1]
    mean = total[:channels] / n
    std = np.sqrt(np.maximum(total[channels : 2 * channels] / n - mean**2, 0.0)).clip(min=1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def files_hash(files: list[str], hashes: list[str], labels) -> str:
    """sha256 over (path, label, content sha256) of each file, in order."""
    h = hashlib.sha256()
    for f, sha, label in zip(files, hashes, labels):
        h.update(f"{f}\0{int(label)}\0{sha}\n".encode())
    return h.hexdigest()


def first_image_side(index: FileIndex) -> int:
    """The shorter side of the first readable image: the crop size when ``data.image_size`` is not set."""
    for f in index.files:
        try:
            return min(decode(index.root / f).size)
        except ValueError:
            continue
    raise PipelineError(f"data.root: no readable image under {index.root}")


def skipped_line(skipped: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{f} ({why})" for f, why in skipped[:SHOWN_SKIPPED])
    more = f"; and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
    return f"warning: data: skipped {len(skipped)} unreadable image file(s): {shown}{more}"
