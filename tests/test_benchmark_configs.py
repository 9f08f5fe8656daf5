"""The recipes in benchmarks/configs: the CIFAR-100 reference pairs validate and say what they need when the
data is absent; the photo recipe (image folder, teacher from a checkpoint, timm student) runs on a tiny
generated folder at reduced size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from pipeline.data.sources import load_raw
from pipeline.errors import PipelineError
from pipeline.models import build_model, count_parameters

CONFIG_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("cifar100_*.yaml"))


def test_there_is_one_recipe_per_published_pair():
    assert len(CONFIGS) == 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_validates_with_repdistillers_schedule(path):
    cfg = load_config(path)
    assert cfg.data.dataset == "cifar100" and cfg.data.val_fraction == 0.0
    for section in (cfg.teacher, cfg.distill):
        assert (section.epochs, section.schedule, section.milestones) == (240, "step", [150, 180, 210])
    teacher = count_parameters(build_model(cfg.teacher.arch, 100, 3))
    student = count_parameters(build_model(cfg.student.arch, 100, 3))
    assert teacher > student


def test_missing_cifar_says_where_it_looked(tmp_path):
    with pytest.raises(PipelineError, match="cifar-100-python"):
        load_raw("cifar100", str(tmp_path / "nowhere"))


PHOTOS = CONFIG_DIR / "photos224_edge_tpu.yaml"


def _photo_folder(root: Path, classes: int = 3, per_class: int = 10) -> Path:
    """One sub-folder per class of 40×40 RGB photos (JPEG and PNG) told apart by colour and stripes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"class_{k}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
            img[:, :, k] += 150
            img[k * 12 : k * 12 + 8] = 255
            Image.fromarray(img).save(root / f"class_{k}" / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def test_photo_recipe_is_224_rgb_with_a_checkpoint_teacher_and_an_edge_tpu_student():
    cfg = load_config(PHOTOS)
    assert (cfg.data.dataset, cfg.data.image_size, cfg.data.channels) == ("image_folder", 224, 3)
    assert cfg.teacher.checkpoint and cfg.teacher.head == "reset" and cfg.teacher.epochs > 0
    assert cfg.student.arch == "timm:tf_mobilenetv3_small_minimal_100" and cfg.target.name == "edge_tpu"
    from pipeline.target import TARGETS

    assert TARGETS["edge_tpu"].friendly_alternative(cfg.student.arch) is None  # already the friendly variant


def test_photo_recipe_runs_on_a_tiny_generated_folder(tmp_path):
    """The recipe as written, through export, with sizes reduced: 32 px, one epoch each, ONNX/OpenVINO formats (no onnx2tf)."""
    import torchvision

    from pipeline.run import run_pipeline

    folder = _photo_folder(tmp_path / "photos")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50.pth")  # ImageNet-shaped: 1000 classes
    overrides = {"runs_dir": str(tmp_path / "runs"), "data.root": str(folder), "teacher.checkpoint": str(tmp_path / "resnet50.pth"),
                 "data.image_size": 32, "data.batch_size": 8, "data.calibration_size": 8, "teacher.epochs": 1,
                 "distill.epochs": 1, "qat.epochs": 1, "export.formats": ["onnx", "openvino_fp32", "openvino_int8"],
                 "target.check_before_training": False,
                 # three steps on 22 images: the recipe's rates would blow up the eval-mode logits of so short a run
                 "distill.lr": 0.002, "qat.lr": 0.0005}
    manifests = run_pipeline(load_config(PHOTOS, overrides), until="export")
    data, teacher, distill = (manifests[s].metrics for s in ("data", "teacher", "distill"))
    assert data["input_shape"] == [3, 32, 32] and data["train"] + data["val"] + data["test"] == 30
    assert teacher["source_checkpoint"]["head_reset"] == ["fc.bias", "fc.weight"] and len(teacher["history"]) == 1
    assert teacher["arch"] == "torchvision:resnet50" and distill["student_params"] < teacher["params"] / 10
    export = manifests["export"].metrics
    assert export["source"] in ("qat", "distill") and set(export["fidelity"]) == {"onnx", "openvino_fp32", "openvino_int8"}
    assert export["fidelity"]["onnx"]["passed"] and export["fidelity"]["openvino_fp32"]["passed"]
