"""Device, precision and the cheaper frozen teacher (issue 17), in one process; the CUDA test skips here."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pipeline.artifacts import Manifest
from pipeline.config import load_config, validate_config
from pipeline.data import ArrayDataset
from pipeline.models.conv_bn import fold_batchnorm
from pipeline.train.supervision import TeacherForward, supervising_teacher
from pipeline.errors import PipelineError
from pipeline.models import build_model
from pipeline.models.checkpoint import read_checkpoint
from pipeline.models.taps import FeatureTaps
from pipeline.run import cache_key, run_pipeline, stage_dir, STAGES
from pipeline.train import distributed
from pipeline.train.data import make_loader, sampled_indices
from pipeline.train.distributed import Placement, resolve_device, resolve_precision
from pipeline.train.loop import fit, revert_sync_batchnorm
from pipeline.train.spec import FitSpec, Schedule


def trained_bn(model: nn.Module) -> nn.Module:
    """Give every BatchNorm statistics and an affine map that are not the identity."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.1 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def test_folded_teacher_computes_the_same_logits_and_tapped_features():
    teacher = trained_bn(build_model("resnet20", 10, 1))
    folded = copy.deepcopy(teacher)
    assert fold_batchnorm(folded) == 21  # every conv-BN pair of resnet20: stem, 18 block convs, 2 projection shortcuts
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(8, 1, 16, 16)
    with torch.no_grad(), FeatureTaps(teacher, teacher.stage_names) as a, FeatureTaps(folded, folded.stage_names) as b:
        ref, out = a.run(x), b.run(x)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-4)
    for name in teacher.stage_names:
        torch.testing.assert_close(out.feats[name], ref.feats[name], rtol=1e-4, atol=1e-4)


def test_supervising_teacher_records_what_it_applied_and_keeps_the_teacher():
    teacher = trained_bn(build_model("resnet8", 10, 1))
    before = copy.deepcopy(teacher.state_dict())
    cfg = validate_config({"distill": {"teacher_precision": "bf16"}}).distill
    fast, run, record = supervising_teacher(teacher, cfg)
    assert record == {"teacher_bn_folded": 9, "teacher_precision": "bf16", "teacher_channels_last": True}
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # the teacher itself untouched
    x = torch.randn(64, 1, 16, 16)
    with torch.no_grad():
        ref = teacher(x)
    out = run(fast, x)
    assert out.dtype == torch.bfloat16  # the step takes .float() before any loss
    assert (out.float().argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.1)


def test_teacher_forward_runs_in_its_own_precision_inside_a_bf16_step():
    model = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with distributed.current().autocast("bf16"):
        assert model(x).dtype == torch.bfloat16
        assert TeacherForward("fp32")(model, x).dtype == torch.float32  # the teacher's own setting wins


def test_auto_precision_and_devices():
    cpu = torch.device("cpu")
    assert resolve_precision("fp16", cpu) == "fp16"
    assert resolve_precision("auto", cpu) == ("bf16" if distributed.native_bf16(cpu) else "fp32")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else cpu)
    assert resolve_device("cpu", local_rank=1, world_size=2) == cpu
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="train.device: 'cuda' asked, but torch sees no CUDA device .* use auto or cpu"):
            resolve_device("cuda")
    with pytest.raises(PipelineError, match="train.device"):
        validate_config({"train": {"device": "gpu0"}})


def test_more_processes_than_gpus_is_one_line_naming_the_fix(monkeypatch):
    """torchrun --nproc_per_node 2 on a one-GPU node: seen on an H200 machine, where auto sent rank 1 to cuda:1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", local_rank=0, world_size=2) == torch.device("cuda", 0)
    with pytest.raises(PipelineError, match=r"train.device: auto: process LOCAL_RANK 1 needs cuda:1, but this node has 1 "
                                            r"CUDA device\(s\); .*--nproc_per_node.* or set train.device: cpu"):
        resolve_device("auto", local_rank=1, world_size=2)
    with pytest.raises(PipelineError, match=r"train.device: cuda:3 asked, but there are 1 CUDA device"):
        resolve_device("cuda:3")


def test_device_and_precision_reach_the_manifest_and_only_precision_reaches_the_cache_key(tiny_recipe):
    cfg = load_config(tiny_recipe, {"train.precision": "bf16", "teacher.epochs": 1, "distill.teacher_precision": "fp32",
                                    "train.device": "cpu"})
    done = run_pipeline(cfg, until="distill")
    assert done["teacher"].placement == {"world_size": 1, "backend": None, "device": "cpu", "precision": "bf16", "sync_bn": False}
    assert done["distill"].metrics["teacher_precision"] == "fp32" and done["distill"].metrics["teacher_bn_folded"] == 9
    assert all(t.device.type == "cpu" for t in read_checkpoint(stage_dir(cfg, "distill") / "student.pt")["state_dict"].values())
    teacher = next(s for s in STAGES if s.name == "teacher")
    key = lambda **o: cache_key(load_config(tiny_recipe, {"teacher.epochs": 1, **o}), teacher, {})  # noqa: E731
    assert key(**{"train.device": "cpu"}) == key(**{"train.device": "auto", "train.timeout_s": 5, "data.workers": 3})
    assert key(**{"train.precision": "bf16"}) != key()


def test_fp16_with_a_gradient_scaler_trains():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    data = ArrayDataset(x, (x.sum(1) > 0).long())
    schedule = Schedule(epochs=3, lr=0.5, optimizer="sgd", momentum=0.9, weight_decay=0.0, schedule="constant")
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    result = fit(modules=[model], step=lambda a, b, _: (nn.functional.cross_entropy(model(a), b), model(a)), train=data,
                 spec=FitSpec(schedule, batch_size=32, seed=0, desc="fp16", precision="fp16"))
    assert result["history"][-1]["train_acc"] > 0.9


def test_the_global_batch_is_split_and_the_shards_are_disjoint(monkeypatch):
    data = ArrayDataset(torch.zeros(101, 1), torch.zeros(101, dtype=torch.long))
    shards = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "_current", Placement(rank=rank, world_size=2, backend="gloo"))
        loader = make_loader(data, 32, shuffle=True, seed=5)
        assert loader.batch_size == 16 and len(loader) == 4  # 50 images each, the 101st dropped this epoch
        shards.append(set(sampled_indices(loader)))
    assert len(shards[0]) == len(shards[1]) == 50 and not shards[0] & shards[1]
    with pytest.raises(PipelineError, match="data.batch_size: 33 is the global batch .* multiple of 2"):
        make_loader(data, 33, shuffle=True)


def test_sync_batchnorm_is_reverted_to_plain_batchnorm_for_saving():
    model = trained_bn(build_model("resnet8", 10, 1))
    ref = copy.deepcopy(model)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    back = revert_sync_batchnorm(synced).eval()
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in back.modules())
    assert back.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(back(x), ref(x))


def test_sync_bn_on_cpu_processes_is_one_line(tiny_recipe, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config(tiny_recipe, {"train.sync_bn": True, "train.device": "cpu"})
    with pytest.raises(PipelineError, match="train.sync_bn: torch's SyncBatchNorm runs on CUDA devices only"):
        run_pipeline(cfg, until="teacher")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_saves_checkpoints_that_load_on_the_cpu(tiny_recipe):
    cfg = load_config(tiny_recipe, {"train.device": "cuda", "train.precision": "bf16", "teacher.epochs": 1})
    done = run_pipeline(cfg, until="distill")
    assert done["distill"].placement["device"] == "cuda:0" and done["distill"].placement["precision"] == "bf16"
    assert done["distill"].metrics["teacher_precision"] == "bf16"
    blob = read_checkpoint(stage_dir(cfg, "distill") / "student.pt")
    assert all(t.device.type == "cpu" for t in blob["state_dict"].values())
    assert Manifest.read(stage_dir(cfg, "teacher")).placement["device"] == "cuda:0"
