"""External inputs in cache keys, and byte-reproducible stages: the right stages re-run, and only those."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

import pipeline.inputs
from pipeline.config import load_config
from pipeline.inputs import files_fingerprint
from pipeline.models import build_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.run import run_pipeline


def _started(manifests) -> dict[str, float]:
    return {name: m.started for name, m in manifests.items()}


def _reran(before, after) -> list[str]:
    return [name for name in after if after[name].started != before[name].started]


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-identical retraining needs the same thread count every time (and 2 shared cores like it better)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _teacher_checkpoint(path, seed: int) -> None:
    torch.manual_seed(seed)
    save_checkpoint(path, build_model("resnet8", 10, 1), {"arch": "resnet8", "arch_args": {}, "num_classes": 10, "in_channels": 1})


def test_replacing_the_teacher_checkpoint_reruns_the_teacher_and_what_follows(tiny_recipe, tmp_path):
    ckpt = tmp_path / "teacher.pt"
    _teacher_checkpoint(ckpt, seed=0)
    cfg = load_config(tiny_recipe, {"teacher.checkpoint": str(ckpt)})
    first = run_pipeline(cfg, until="distill")
    assert _reran(first, run_pipeline(cfg, until="distill")) == []
    _teacher_checkpoint(ckpt, seed=1)  # the same path, other weights
    third = run_pipeline(cfg, until="distill")
    assert _reran(first, third) == ["teacher", "distill"]
    assert third["teacher"].metrics["source_checkpoint_sha256"] != first["teacher"].metrics["source_checkpoint_sha256"]


def _write_idx(path, arr) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def idx_recipe(tmp_path):
    """A Fashion-MNIST-layout dataset of 8×8 images written here, and a recipe reading it."""
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (240, 8, 8))
    _write_idx(folder / "train-images-idx3-ubyte.gz", images)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(240) % 10)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (40, 8, 8)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(40) % 10)
    recipe = tmp_path / "idx.yaml"
    recipe.write_text(f"runs_dir: {tmp_path / 'runs'}\ndata: {{dataset: fashion_mnist, root: {folder}, calibration_size: 16}}\n"
                      "teacher: {arch: resnet8, epochs: 1}\ntarget: {check_before_training: false}\n")
    return recipe, folder, images


def _touch_all(folder) -> None:
    for p in folder.iterdir():
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_editing_an_image_reruns_data_and_teacher_a_touch_reruns_nothing(idx_recipe):
    recipe, folder, images = idx_recipe
    cfg = load_config(recipe)
    first = run_pipeline(cfg, until="teacher")
    _touch_all(folder)  # same bytes, new mtimes: fingerprinted by content here, so nothing re-runs
    assert _reran(first, run_pipeline(cfg, until="teacher")) == []

    edited = images.copy()
    edited[5] = 255 - edited[5]  # one image changed in place, the count the same
    _write_idx(folder / "train-images-idx3-ubyte.gz", edited)
    third = run_pipeline(cfg, until="teacher")
    assert _reran(first, third) == ["data", "teacher"]
    assert third["data"].outputs["split.json"] != first["data"].outputs["split.json"]  # the dataset hash in it


def test_a_stage_rebuilt_into_the_same_bytes_reruns_nothing_after_it(idx_recipe, monkeypatch):
    recipe, folder, _ = idx_recipe
    cfg = load_config(recipe)
    first = run_pipeline(cfg, until="distill")

    monkeypatch.setattr(pipeline.inputs, "CONTENT_BUDGET", 0)  # a "large" dataset: names, sizes, mtimes
    changed = run_pipeline(cfg, until="distill")  # the key's form changed: data re-runs, into the same bytes
    _touch_all(folder)
    touched = run_pipeline(cfg, until="distill")  # mtimes changed: data re-runs again, same bytes
    for after in (changed, touched):
        assert _reran(first, after) == ["data"] and after["data"].outputs == first["data"].outputs

    rebuilt = run_pipeline(cfg, start="teacher", until="teacher")  # retrained: no timings inside, same bytes
    assert rebuilt["teacher"].started != first["teacher"].started
    assert rebuilt["teacher"].outputs == first["teacher"].outputs
    last = run_pipeline(cfg, until="distill")
    assert last["distill"].started == first["distill"].started


def test_files_fingerprint_by_content_within_budget_else_by_stat(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 100)
    by_content, by_stat = files_fingerprint([a]), files_fingerprint([a], budget=10)
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert files_fingerprint([a]) == by_content and files_fingerprint([a], budget=10) != by_stat
    a.write_bytes(b"y" * 100)
    assert files_fingerprint([a]) != by_content


def test_openvino_irs_are_the_same_bytes_in_one_process(tmp_path, tiny_student):
    """OpenVINO names nodes from a process-wide counter; the IRs must not depend on what ran before."""
    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.export.torch2onnx import torch2onnx

    onnx = torch2onnx(tiny_student, (1, 8, 8), tmp_path / "student.onnx")
    calibration = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    first = onnx2openvino(onnx, tmp_path / "a", calibration)
    second = onnx2openvino(onnx, tmp_path / "b", calibration)
    for key in ("openvino_fp32", "openvino_int8"):
        assert first[key].read_bytes() == second[key].read_bytes(), key
        assert first[key].with_suffix(".bin").read_bytes() == second[key].with_suffix(".bin").read_bytes(), key
