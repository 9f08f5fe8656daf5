"""Weights the user brings: every accepted form loads into the configured architecture with the same
outputs; every other file, and every mismatch, is one plain line naming the key and what is accepted.
The tests write each file themselves (no downloads)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.config import validate_config
from pipeline.errors import PipelineError, one_line
from pipeline.models import build_model
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.weights import ACCEPTED, STATE_DICT_KEYS, model_from_checkpoint

ARCH = "torchvision:mobilenet_v3_small"  # small, and BN + a Linear head like most users' models
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _source(num_classes: int = 10, in_channels: int = 3, arch: str = ARCH) -> nn.Module:
    torch.manual_seed(3)
    model = build_model(arch, num_classes, in_channels).eval()
    with torch.no_grad():
        for m in model.modules():  # non-default statistics, so a buffer left behind shows in the logits
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
    return model


def _load(path: Path, section: str = "teacher", num_classes: int = 10, in_channels: int = 3, **spec):
    cfg = validate_config({section: {"checkpoint": str(path), **({"arch": ARCH} | spec)}})
    return model_from_checkpoint(getattr(cfg, section), section=section, num_classes=num_classes, in_channels=in_channels)


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    with torch.no_grad():
        return torch.allclose(a.eval()(X), b.eval()(X), atol=1e-6)


def test_plain_state_dict_loads_with_the_configured_arch(tmp_path):
    source = _source()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model, info = _load(tmp_path / "w.pt")
    assert _same_outputs(model, source)
    assert info["format"] == "state_dict" and info["key"] is None and info["arch"] == ARCH and len(info["sha256"]) == 64


@pytest.mark.parametrize("key", STATE_DICT_KEYS)
def test_training_script_dicts_with_ddp_prefixes_and_their_args(tmp_path, key):
    """torchvision's reference scripts and timm's train.py save {model|state_dict…, optimizer, epoch, args (a Namespace)}."""
    source = _source()
    blob = {key: {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 7,
            "args": argparse.Namespace(lr=0.1, model="mobilenet_v3_small"), "optimizer": {"state": {}, "param_groups": []}}
    torch.save(blob, tmp_path / "ckpt.pth")
    model, info = _load(tmp_path / "ckpt.pth", section="student")
    assert _same_outputs(model, source) and info["key"] == key


def test_safetensors_and_torchvision_ema_files(tmp_path):
    from safetensors.torch import save_file

    source = _source()
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    assert _same_outputs(_load(tmp_path / "model.safetensors")[0], source)
    ema = {f"module.{k}": v for k, v in source.state_dict().items()} | {"n_averaged": torch.tensor(12)}
    torch.save({"model": {}, "model_ema": ema}, tmp_path / "ema.pth")  # torchvision's AveragedModel layout
    model, info = _load(tmp_path / "ema.pth")
    assert _same_outputs(model, source) and info["key"] == "model_ema"


def test_pipeline_checkpoint_names_its_own_arch_and_a_conflicting_config_is_one_line(tmp_path):
    source = _source()
    save_checkpoint(tmp_path / "teacher.pt", source, {"arch": ARCH, "arch_args": {}, "num_classes": 10, "in_channels": 3})
    cfg = validate_config({"teacher": {"checkpoint": str(tmp_path / "teacher.pt")}})  # no arch: the file says it
    model, info = model_from_checkpoint(cfg.teacher, section="teacher", num_classes=10, in_channels=3)
    assert _same_outputs(model, source) and info["format"] == "pipeline" and info["arch"] == ARCH
    with pytest.raises(PipelineError) as err:
        _load(tmp_path / "teacher.pt", arch="torchvision:resnet18")
    assert str(err.value) == (f"teacher.checkpoint: {tmp_path / 'teacher.pt'}: a {ARCH} checkpoint, but teacher.arch is "
                              f"torchvision:resnet18; set teacher.arch: {ARCH} (or remove it: a pipeline checkpoint names its architecture)")


def test_file_that_records_another_arch_is_refused(tmp_path):
    """timm's train.py records `arch` beside the weights: a config naming another model is told so."""
    torch.save({"arch": "resnet18", "state_dict": _source().state_dict()}, tmp_path / "last.pth.tar")
    with pytest.raises(PipelineError, match="records arch 'resnet18', but teacher.arch is torchvision:mobilenet_v3_small"):
        _load(tmp_path / "last.pth.tar")


def test_class_count_mismatch_names_the_keys_unless_head_reset(tmp_path):
    source = _source(num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "imagenet.pth")
    with pytest.raises(PipelineError) as err:
        _load(tmp_path / "imagenet.pth", num_classes=10)
    assert str(err.value) == (f"teacher.checkpoint: {tmp_path / 'imagenet.pth'}: weights do not fit {ARCH}: shape mismatch "
                              "classifier.3.weight [1000, 1024] vs [10, 1024], classifier.3.bias [1000] vs [10]; the classifier "
                              "has another class count: set teacher.head: reset to re-initialise it")
    model, info = _load(tmp_path / "imagenet.pth", num_classes=10, head="reset")
    assert info["head_reset"] == ["classifier.3.bias", "classifier.3.weight"]
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.3.")}
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in body.items())
    assert model(X).shape == (2, 10)


def test_wrong_architecture_and_channel_count_say_which_key_to_set(tmp_path):
    torch.save(_source(arch="torchvision:resnet18").state_dict(), tmp_path / "r18.pt")
    with pytest.raises(PipelineError, match=r"weights do not fit torchvision:mobilenet_v3_small: \d+ missing \(features\.0\.0\.weight, "
                                            r".*; \d+ unexpected \(conv1\.weight, .*; set teacher\.arch \(and arch_args\)"):
        _load(tmp_path / "r18.pt")
    torch.save(_source().state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(PipelineError, match=r"features\.0\.0\.weight \[16, 3, 3, 3\] vs \[16, 1, 3, 3\]; the checkpoint reads "
                                            r"3-channel images, the data has 1: set data\.channels: 3$"):
        _load(tmp_path / "rgb.pt", in_channels=1)
    with pytest.raises(PipelineError, match="a state_dict does not say which architecture it belongs to; set teacher.arch"):
        model_from_checkpoint(validate_config({"teacher": {"checkpoint": str(tmp_path / "rgb.pt")}}).teacher,
                              section="teacher", num_classes=10, in_channels=3)


def _files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each file a user may wrongly bring, and what its one line must say."""
    source = _source()
    torch.save(source, tmp_path / "whole_model.pt")
    with torch.no_grad():
        torch.jit.trace(source, X[:1]).save(str(tmp_path / "scripted.pt"))
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save(source.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"epoch": 3, "best_acc1": 71.2}, tmp_path / "no_weights.pt")
    return {
        "whole model": (tmp_path / "whole_model.pt", "holds pickled Python objects (torchvision.models.mobilenetv3.MobileNetV3"),
        "TorchScript": (tmp_path / "scripted.pt", "a TorchScript archive (torch.jit.save)"),
        "0 bytes": (tmp_path / "empty.pt", "empty file (0 bytes)"),
        "truncated": (tmp_path / "truncated.pt", "not a readable checkpoint (truncated, or not written by torch.save"),
        "no state_dict": (tmp_path / "no_weights.pt", "a dict with keys epoch, best_acc1 but no state_dict under any of them"),
        "missing": (tmp_path / "nowhere.pt", "no such file"),
    }


def test_every_unusable_file_is_one_plain_line_saying_what_is_accepted(tmp_path):
    for case, (path, expected) in _files(tmp_path).items():
        with pytest.raises(PipelineError) as err:
            _load(path, section="student")
        message = str(err.value)
        assert message.startswith(f"student.checkpoint: {path}: {expected}"), case
        assert "\n" not in message and "\x1b" not in message, case
        if case != "missing":
            assert ACCEPTED in message, case


def test_one_line_strips_escapes_and_never_cuts_a_word():
    text = "Weights only load failed. \x1b[1mdo those steps only if you trust the source\x1b[0m.\n\t(1) In PyTorch 2.6"
    assert one_line(text, 1000) == "Weights only load failed. do those steps only if you trust the source. (1) In PyTorch 2.6"
    assert one_line(text, 40) == "Weights only load failed. do those…"
    assert one_line("short", 40) == "short"
