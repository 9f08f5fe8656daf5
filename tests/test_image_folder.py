"""Image folders that stream (issue 16 item 4): listing, skipping unreadable files, recorded file lists,
transforms that fit the resolution, per-image augmentation seeds, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import validate_config
from pipeline.data import load_split, split_dataset
from pipeline.data.folder import ImageFiles, eval_transform, list_folder, train_transform
from pipeline.errors import PipelineError
from pipeline.run import run_pipeline, stage_dir
from pipeline.train.data import make_loader, training_data

COLOURS = {"cat": (200, 30, 30), "dog": (30, 30, 200)}


def make_folder(root, n_train=6, n_test=3, size=(40, 50)):
    """Two classes of solid-colour images with a train/ (PNG, lossless) and a test/ (JPEG) split."""
    for split, n in (("train", n_train), ("test", n_test)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", size, colour).save(folder / f"{i}.{'png' if split == 'train' else 'jpg'}")
    return root


def recipe(tmp_path, **data):
    return validate_config({
        "name": "folder", "runs_dir": str(tmp_path / "runs"),
        "data": {"dataset": "image_folder", "root": str(tmp_path / "imgs"), "image_size": 16, "calibration_size": 4,
                 "batch_size": 4, "val_fraction": 0.0, **data},
        "teacher": {"arch": "resnet8", "epochs": 1}, "target": {"check_before_training": False},
    })


def test_listing_keeps_the_official_split_and_leaves_out_empty_class_folders(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "emu").mkdir()
    (tmp_path / "test" / "emu").mkdir()
    warnings = []
    index = list_folder(tmp_path, warn=warnings.append)
    assert index.class_names == ("cat", "dog") and index.test_start == 12 and len(index.files) == 18
    assert index.files[0] == "train/cat/0.png" and index.labels[6] == 1
    assert warnings == ["warning: data.root: class folder(s) without images left out: emu"]


def test_one_class_is_one_line(tmp_path):
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()  # empty: not a class
    with pytest.raises(PipelineError) as err:
        list_folder(tmp_path, warn=lambda line: None)
    assert "at least two class folders" in str(err.value) and "found only 'cat'" in str(err.value)
    assert "\n" not in str(err.value)


def test_data_stage_skips_unreadable_files_and_records_file_lists(tmp_path, capsys):
    make_folder(tmp_path / "imgs")
    good = (tmp_path / "imgs" / "test" / "cat" / "0.jpg").read_bytes()
    (tmp_path / "imgs" / "train" / "cat" / "cut.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "imgs" / "train" / "dog" / "junk.png").write_bytes(b"not an image")
    cfg = recipe(tmp_path)
    manifest = run_pipeline(cfg, until="data")["data"]
    err = capsys.readouterr().err
    assert manifest.metrics["skipped_images"] == 2
    warning = [line for line in err.splitlines() if "skipped 2 unreadable" in line]
    assert len(warning) == 1 and "train/cat/cut.jpg (" in warning[0] and "truncated" in warning[0].lower()
    assert "train/dog/junk.png (cannot identify image file)" in warning[0]
    info = json.loads((stage_dir(cfg, "data") / "split.json").read_text())
    assert info["skipped"][0]["file"] == "train/cat/cut.jpg"
    assert len(info["files"]["train"]) == 12 and len(info["files"]["test"]) == 6
    assert {f for f, _ in info["files"]["calibration"]} <= {f for f, _ in info["files"]["train"]}
    assert set(info["files_sha256"]) == {"train", "val", "test", "calibration"} and len(info["dataset_sha256"]) == 64
    # mean/std from the training images: half red (200, 30, 30), half blue (30, 30, 200)
    np.testing.assert_allclose(info["preprocess"]["mean"], [115 / 255, 30 / 255, 115 / 255], atol=1e-5)
    np.testing.assert_allclose(info["preprocess"]["std"], [85 / 255, 1e-3, 85 / 255], atol=1e-5)  # std floor 1e-3
    calib = np.load(stage_dir(cfg, "data") / "calibration.npy")
    assert calib.shape == (4, 3, 16, 16) and calib.dtype == np.float32


def test_test_images_are_resized_centre_cropped_and_normalised(tmp_path):
    make_folder(tmp_path / "imgs")
    cfg = recipe(tmp_path, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    run_pipeline(cfg, until="data")
    x, y = load_split(stage_dir(cfg, "data"), "test")
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    red = (np.array([200, 30, 30]) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(x[0, :, 8, 8], red, atol=0.05)  # JPEG keeps a solid colour within ~3 levels (0.05·0.25·255)


def test_transforms_fit_the_resolution():
    photo, small = train_transform(224, 3, ((0.5,) * 3, (0.25,) * 3), ["crop", "flip"]), train_transform(32, 3, ((0.5,) * 3, (0.25,) * 3), ["crop"])
    names = lambda t: [type(s).__name__ for s in t.transforms]  # noqa: E731
    assert names(photo)[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert names(small)[:3] == ["Resize", "CenterCrop", "RandomCrop"] and small.transforms[2].padding == [4, 4, 4, 4]
    assert names(eval_transform(224, 1, None))[:3] == ["Resize", "CenterCrop", "Grayscale"]
    assert eval_transform(224, 3, None).transforms[0].size == [256]  # 224 / 0.875


def test_augmentation_is_seeded_per_image_not_per_worker(tmp_path):
    make_folder(tmp_path / "imgs", n_train=8)
    cfg = recipe(tmp_path, augment=["crop", "flip"], image_size=24)
    run_pipeline(cfg, until="data")
    data_dir = stage_dir(cfg, "data")

    def epoch(workers):
        ds = split_dataset(data_dir, "train", augment=["crop", "flip"], workers=workers)
        loader = make_loader(ds, 4, shuffle=True, seed=3)
        return torch.cat([x for x, _ in loader])

    alone, two_workers = epoch(0), epoch(2)
    assert torch.equal(alone, two_workers)
    ds = split_dataset(data_dir, "train", augment=["crop", "flip"])
    assert torch.equal(ds[(0, 11)][0], ds[(0, 11)][0]) and not torch.equal(ds[(0, 11)][0], ds[(0, 12)][0])


def test_a_file_gone_after_the_data_stage_is_one_line_naming_it(tmp_path):
    make_folder(tmp_path / "imgs")
    cfg = recipe(tmp_path, workers=1)
    run_pipeline(cfg, until="data")
    data = training_data(stage_dir(cfg, "data"), cfg.data)
    victim = data.train.files[0]
    (tmp_path / "imgs" / victim).write_bytes(b"")
    with pytest.raises(PipelineError) as err:
        list(make_loader(data.train, 4, shuffle=False))
    assert str(err.value).startswith(f"{tmp_path / 'imgs' / victim}: unreadable now") and "\n" not in str(err.value)


def test_teacher_trains_on_a_streamed_folder(tmp_path):
    make_folder(tmp_path / "imgs")
    cfg = recipe(tmp_path, workers=1)
    m = run_pipeline(cfg, until="teacher")["teacher"]
    assert m.metrics["test_acc"] >= 0.5 and m.placement["world_size"] == 1
    assert isinstance(training_data(stage_dir(cfg, "data"), cfg.data).train, ImageFiles)


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    """PIL opens a 16-bit grey PNG as I;16 (0..65535); convert('RGB') alone would make 32768 white (255)."""
    from pipeline.data.folder import decode

    wide = np.full((4, 4), 32768, np.uint16)
    wide[0, 0], wide[0, 1] = 0, 65535
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    rgb = np.asarray(decode(tmp_path / "wide.png"))
    assert rgb.shape == (4, 4, 3) and rgb[0, 0, 0] == 0 and rgb[0, 1, 0] == 255 and rgb[2, 2, 0] == 128
