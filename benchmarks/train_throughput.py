"""What training costs, and what the cheaper frozen teacher saves (issue 17).

Setting: Fashion-MNIST at 16×16, teacher resnet56 → student resnet8 (the pair whose KD step cost
3.4× the student-alone step, benchmarks/README.md), batch 128, 1 torch thread unless a row says
otherwise. Six parts, each merged into ``benchmarks/results/train_throughput.json``:

* ``forward``: the frozen teacher's forward per batch of 128 in fp32, channels-last, conv-BN
  folded, bf16 autocast, their combinations and ``torch.compile``, timed interleaved (one call of
  each variant per round, median over rounds), with top-1 agreement with fp32 on the test images.
* ``steps``: the distill stage's own step (``setup_seed``), student alone (method none) vs KD with
  the old fp32 teacher vs KD with the fast teacher forward, both run every step, interleaved: KD
  step ÷ student step.
* ``schedule``: the distill stage's whole schedule through ``fit`` (8 epochs), student alone vs KD
  with each teacher setting, the kinds taking turns: the mean step over every epoch, where the
  default reuses the teacher's logits for 4 epochs (``distill.teacher_reuse``: 2 views replayed).
* ``processes``: images/s of teacher training and of a KD step through the pipeline's ``fit``,
  1 process × 1 thread, 1 process × 2 threads, ``torchrun`` 2 gloo processes × 1 thread.
* ``top1``: the distill stage, 3 seeds, with the old fp32 teacher and with the new default.
* ``steps224``: the same steps at ImageNet size on the device training picks (a GPU where there is
  one): timm resnet50 → resnet18, 3×224×224, batch 128, student in fp32 and in bf16 autocast.
  Random images: only the time is measured (no accuracy), so nothing is downloaded.

    python benchmarks/train_throughput.py --runs-dir /tmp/tt-runs             # every part
    python benchmarks/train_throughput.py --parts forward steps               # some parts
    python benchmarks/train_throughput.py --table                             # print the stored tables

Timings come from a shared 2-core machine: compare the ratios measured within one part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline.artifacts import atomic_write_json, hash_json  # noqa: E402
from pipeline.config import validate_config  # noqa: E402

RESULTS = ROOT / "results" / "train_throughput.json"
PARTS = ("forward", "steps", "schedule", "processes", "top1", "steps224")
BATCH = 128
BUDGET = {
    "data": {"dataset": "fashion_mnist", "image_size": 16, "max_train": 8000, "max_test": 5000, "val_fraction": 0.05,
             "augment": ["crop", "flip"], "batch_size": BATCH, "calibration_size": 128, "mean": [0.2868], "std": [0.3217]},
    "teacher": {"arch": "resnet56", "epochs": 5, "lr": 0.1},
    "teacher_max_train": 20000,  # the teacher's training images (the students get 8k)
    "student": {"arch": "resnet8"},
    "distill": {"method": "kd", "epochs": 8, "lr": 0.1},
    "target": {"check_before_training": False},
}
# the frozen teacher before issue 17; its cheaper forward (config.FrozenTeacherConfig), still run every
# step; and the new default, that forward with its logits reused for 4 epochs (distill.teacher_reuse:
# 8 epochs replay 2 views)
TEACHERS = {
    "fp32 (old)": {"teacher_precision": "fp32", "teacher_channels_last": False, "teacher_fold_bn": False, "teacher_reuse": 1},
    "fast forward, every step": {"teacher_reuse": 1},
    "default (new): fast forward, logits reused ×4": {},
}
EVERY_STEP = {k: v for k, v in TEACHERS.items() if v.get("teacher_reuse") == 1}  # what one interleaved step can time


def config(runs: Path, name: str, **sections) -> dict:
    raw = {k: dict(v) for k, v in BUDGET.items() if isinstance(v, dict)}
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return {**raw, "name": name, "runs_dir": str(runs)}


def ensure_teacher(runs: Path) -> Path:
    """Train the resnet56 teacher once (the pipeline's own data → teacher stages); its checkpoint."""
    from pipeline.run import run_pipeline, stage_dir

    raw = config(runs, "teacher", data={"max_train": BUDGET["teacher_max_train"]})
    raw["name"] = "teacher-" + hash_json(raw)[:10]
    cfg = validate_config(raw, source="train_throughput.py")
    run_pipeline(cfg, until="teacher")
    return stage_dir(cfg, "teacher") / "teacher.pt"


def student_config(runs: Path, teacher: Path, name: str, distill: dict, seeds=(0,)) -> dict:
    # epochs 0: the trained teacher as is (a checkpoint with teacher.epochs > 0 would be fine-tuned)
    return config(runs, name, teacher={"checkpoint": str(teacher), "epochs": 0}, distill={**distill, "seeds": list(seeds)})


def interleaved(calls: dict, rounds: int, warmup: int = 3) -> dict[str, float]:
    """Median ms of each call, timing one call of each per round so machine load hits them alike."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(warmup + rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if r >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def part_forward(runs: Path, rounds: int) -> dict:
    """The frozen teacher's forward, batch 128, in each variant; agreement with fp32 on the test split."""
    import copy

    import torch

    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.models.conv_bn import fold_batchnorm
    from pipeline.run import run_pipeline, stage_dir
    from pipeline.train.loop import predict
    from pipeline.train.supervision import TeacherForward, freeze

    teacher_pt = ensure_teacher(runs)
    cfg = validate_config(student_config(runs, teacher_pt, "forward", {}), source="train_throughput.py")
    run_pipeline(cfg, until="data")
    from pipeline.train.data import training_data

    data = training_data(stage_dir(cfg, "data"), cfg.data)
    teacher = freeze(load_checkpoint(teacher_pt)[0])
    folded = copy.deepcopy(teacher)
    fold_batchnorm(folded)
    cl = lambda m: copy.deepcopy(m).to(memory_format=torch.channels_last)  # noqa: E731
    variants = {
        "fp32": (teacher, TeacherForward("fp32")),
        "channels-last": (cl(teacher), TeacherForward("fp32", True)),
        "BN folded": (folded, TeacherForward("fp32")),
        "bf16": (teacher, TeacherForward("bf16")),
        "bf16 + channels-last": (cl(teacher), TeacherForward("bf16", True)),
        "BN folded + bf16 + channels-last (default)": (cl(folded), TeacherForward("bf16", True)),
    }
    compiled = {}
    try:
        t0 = time.perf_counter()
        fast = torch.compile(cl(folded))
        TeacherForward("bf16", True)(fast, data.test.tensors[0][:BATCH])
        compiled = {"torch.compile(default)": (fast, TeacherForward("bf16", True))}
        compile_seconds = time.perf_counter() - t0
    except Exception as exc:  # an inductor toolchain problem is a result, not a crash
        compile_seconds = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    variants.update(compiled)
    x = data.test.tensors[0][:BATCH]
    ms = interleaved({k: (lambda m=m, run=run: run(m, x)) for k, (m, run) in variants.items()}, rounds)
    reference = predict(lambda xb: TeacherForward("fp32")(teacher, xb), data.test).argmax(1)
    rows = {}
    for name, (model, run) in variants.items():
        logits = predict(lambda xb, m=model, r=run: r(m, xb), data.test)
        rows[name] = {"ms_per_batch": ms[name], "speedup": ms["fp32"] / ms[name],
                      "agreement_with_fp32": float((logits.argmax(1) == reference).mean()),
                      "top1": float((logits.argmax(1) == data.test.tensors[1].numpy()).mean())}
    return {"rows": rows, "compile_seconds": compile_seconds, "rounds": rounds, "batch": BATCH,
            "threads": torch.get_num_threads(), "test_images": len(data.test)}


def part_steps(runs: Path, steps: int) -> dict:
    """The distill stage's training step, interleaved: student alone, KD with the old and the new teacher."""
    import torch

    from pipeline.distill.stage import setup_seed
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.run import run_pipeline, stage_dir
    from pipeline.train.data import training_data
    from pipeline.train.loop import make_optimizer
    from pipeline.train.spec import Schedule
    from pipeline.train.supervision import freeze, supervising_teacher

    teacher_pt = ensure_teacher(runs)
    kinds = {"student alone": {"method": "none"}, **{f"KD, teacher {k}": v for k, v in EVERY_STEP.items()}}
    calls, setups, records = {}, {}, {}
    for name, distill in kinds.items():
        cfg = validate_config(student_config(runs, teacher_pt, "steps", distill), source="train_throughput.py")
        run_pipeline(cfg, until="data")
        data = training_data(stage_dir(cfg, "data"), cfg.data)
        teacher = freeze(load_checkpoint(teacher_pt)[0])
        supervisor, teacher_run, records[name] = supervising_teacher(teacher, cfg.distill)
        setup = setup_seed(cfg, data, teacher, 0, cfg.run_dir / "cache", supervisor, teacher_run)
        setup.student.train()
        setup.criterion.train()
        opt = make_optimizer([*setup.student.parameters(), *setup.criterion.parameters()], Schedule.of(cfg.distill))
        x_all, y_all = data.train.tensors
        state = {"i": 0}

        def call(setup=setup, opt=opt, x_all=x_all, y_all=y_all, state=state):
            j = (state["i"] * BATCH) % (len(y_all) - BATCH)
            state["i"] += 1
            loss, _ = setup.step(x_all[j : j + BATCH], y_all[j : j + BATCH])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        calls[name], setups[name] = call, setup
    for s in setups.values():
        s.step.teacher_seconds, s.step.batches = 0.0, 0
    ms = interleaved(calls, steps, warmup=5)
    base = ms["student alone"]
    rows = {name: {"ms_per_step": ms[name], "ratio_to_student_alone": ms[name] / base,
                   "teacher_ms_per_batch": setups[name].step.teacher_ms_per_batch, **records[name]} for name in kinds}
    return {"rows": rows, "steps": steps, "batch": BATCH, "threads": torch.get_num_threads()}


def part_schedule(runs: Path, rounds: int) -> dict:
    """The distill stage's whole schedule (``fit``, every epoch) per kind, the kinds taking turns for
    ``rounds`` rounds: mean ms per step over all steps, the first views' full teacher cost included."""
    import torch

    from pipeline.distill.stage import setup_seed
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.run import run_pipeline, stage_dir
    from pipeline.train.data import training_data
    from pipeline.train.loop import fit
    from pipeline.train.spec import FitSpec, Schedule
    from pipeline.train.supervision import freeze, supervising_teacher

    teacher_pt = ensure_teacher(runs)
    kinds = {"student alone": {"method": "none"}, **{f"KD, teacher {k}": v for k, v in TEACHERS.items()}}
    cfgs = {name: validate_config(student_config(runs, teacher_pt, "schedule", distill), source="train_throughput.py")
            for name, distill in kinds.items()}
    first = next(iter(cfgs.values()))  # every kind shares the data section
    run_pipeline(first, until="data")
    data = training_data(stage_dir(first, "data"), first.data)
    teacher = freeze(load_checkpoint(teacher_pt)[0])
    supervisors = {name: supervising_teacher(teacher, cfg.distill)[:2] for name, cfg in cfgs.items()}
    times: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for name, cfg in cfgs.items():
            setup = setup_seed(cfg, data, teacher, 0, cfg.run_dir / "cache", *supervisors[name])
            t0 = time.perf_counter()
            spec = FitSpec(Schedule.of(cfg.distill), batch_size=BATCH, seed=0, desc=name, augment=data.batch_augment,
                           views=setup.views)
            result = fit(modules=[setup.student, setup.criterion], step=setup.step, train=data.train, spec=spec)
            times[name].append({"ms_per_step": result["ms_per_step"], "seconds": time.perf_counter() - t0,
                                "teacher_ms_per_batch": setup.step.teacher_ms_per_batch,
                                **(setup.step.reuse.record() if setup.step.reuse else {})})
    mean = lambda rows, k: statistics.mean(r[k] for r in rows)  # noqa: E731
    base = mean(times["student alone"], "ms_per_step")
    rows = {name: {"ms_per_step": mean(t, "ms_per_step"), "ratio_to_student_alone": mean(t, "ms_per_step") / base,
                   "seconds": mean(t, "seconds"), "teacher_ms_per_batch": mean(t, "teacher_ms_per_batch"),
                   **{k: v for k, v in t[0].items() if k.startswith("teacher_batches")}} for name, t in times.items()}
    return {"rows": rows, "rounds": rounds, "epochs": BUDGET["distill"]["epochs"], "images": BUDGET["data"]["max_train"],
            "batch": BATCH, "threads": torch.get_num_threads()}


STEPS224 = {"teacher": "timm:resnet50", "student": "timm:resnet18", "shape": (3, 224, 224), "classes": 1000}


def part_steps224(steps: int) -> dict:
    """Student alone vs KD with the old fp32 teacher vs KD with the default teacher, 224 px, on the
    device ``train.device: auto`` resolves to; the student's own precision fp32 and bf16."""
    import torch
    from types import SimpleNamespace

    from pipeline.config import FrozenTeacherConfig, TrainConfig
    from pipeline.distill import LOSSES
    from pipeline.distill.trainer import DistillStep, LossWeights
    from pipeline.models import build_model
    from pipeline.models.taps import FeatureTaps
    from pipeline.train.distributed import current, session
    from pipeline.train.supervision import freeze, supervising_teacher

    rows, device = {}, None
    for precision in ("fp32", "bf16"):
        with session(TrainConfig(device="auto", precision=precision)) as place:
            device = place.device
            torch.manual_seed(0)
            teacher = freeze(build_model(STEPS224["teacher"], STEPS224["classes"], 3)).to(device)
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(BATCH, *STEPS224["shape"], generator=gen).to(device)
            y = torch.randint(0, STEPS224["classes"], (BATCH,), generator=gen).to(device)
            calls, steps_of = {}, {}
            kinds = {"student alone": ("none", None), **{f"KD, teacher {k}": ("kd", v) for k, v in TEACHERS.items()}}
            for name, (method, teacher_cfg) in kinds.items():
                student = build_model(STEPS224["student"], STEPS224["classes"], 3).to(device).train()
                loss_cls = LOSSES[method]
                criterion = loss_cls(loss_cls.Options(), None, None).to(device)
                supervisor, run, _ = supervising_teacher(teacher, FrozenTeacherConfig(**(teacher_cfg or {})))
                weights = LossWeights.resolve(SimpleNamespace(w_ce=None, w_kd=None, w_feat=None, temperature=4.0), loss_cls)
                step = DistillStep(FeatureTaps(student, []), FeatureTaps(supervisor, []), criterion, weights, run)
                opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
                scaler = current().grad_scaler()

                def call(step=step, opt=opt, scaler=scaler):
                    with current().autocast():
                        loss, _ = step(x, y)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    if x.is_cuda:
                        torch.cuda.synchronize(x.device)

                calls[name], steps_of[name] = call, step
            ms = interleaved(calls, steps, warmup=5)
            for name in kinds:
                rows[f"{name}, student {precision}"] = {
                    "ms_per_step": ms[name], "ratio_to_student_alone": ms[name] / ms["student alone"],
                    "images_per_s": BATCH / ms[name] * 1e3, "teacher_ms_per_batch": steps_of[name].teacher_ms_per_batch,
                    "teacher_precision": steps_of[name].teacher_run.precision}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"rows": rows, "steps": steps, "batch": BATCH, "device": f"{device} ({name})", "torch": torch.__version__,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in STEPS224.items()}}


def worker_processes(runs: Path, out: Path, images: int) -> None:
    """One process of the ``processes`` part (run under torchrun or alone): teacher training and KD
    training through ``fit`` on ``images`` training images, 2 epochs; the second epoch is timed."""
    import torch

    from pipeline.config import TrainConfig
    from pipeline.distill.stage import setup_seed
    from pipeline.models import build_model
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.run import stage_dir
    from pipeline.train.data import training_data
    from pipeline.train.distributed import session
    from pipeline.train.loop import fit
    from pipeline.train.spec import FitSpec, Schedule
    from pipeline.train.supervision import freeze, supervising_teacher
    from torch.nn import functional as F
    from torch.utils.data import Subset

    teacher_pt = runs / "teacher-path.txt"
    teacher_pt = Path(teacher_pt.read_text().strip())
    cfg = validate_config(student_config(runs, teacher_pt, "steps", {"epochs": 2}), source="train_throughput.py")
    data = training_data(stage_dir(cfg, "data"), cfg.data)
    subset = Subset(data.train, range(images))
    schedule = Schedule.of(cfg.distill.model_copy(update={"epochs": 2}))
    result = {}
    with session(TrainConfig(device="cpu")) as place:
        torch.manual_seed(0)
        model = build_model("resnet56", data.num_classes, 1)

        def teacher_step(x, y, _position):
            logits = model(x)
            return F.cross_entropy(logits, y), logits

        timed = fit(modules=[model], step=teacher_step, train=subset,
                    spec=FitSpec(schedule, batch_size=BATCH, seed=0, desc="teacher", augment=data.batch_augment))
        result["teacher training"] = images / timed["history"][1]["seconds"]
        teacher = freeze(load_checkpoint(teacher_pt)[0])
        supervisor, teacher_run, _ = supervising_teacher(teacher, cfg.distill)
        setup = setup_seed(cfg, data, teacher, 0, cfg.run_dir / "cache", supervisor, teacher_run)
        timed = fit(modules=[setup.student, setup.criterion], step=setup.step, train=subset,
                    spec=FitSpec(schedule, batch_size=BATCH, seed=0, desc="kd", augment=data.batch_augment))
        result["KD step (default teacher)"] = images / timed["history"][1]["seconds"]
        result["world_size"], result["threads"] = place.world_size, torch.get_num_threads()
        if place.is_main:
            atomic_write_json(out, result)


def part_processes(runs: Path, images: int) -> dict:
    from pipeline.run import run_pipeline

    teacher_pt = ensure_teacher(runs)
    cfg = validate_config(student_config(runs, teacher_pt, "steps", {}), source="train_throughput.py")
    run_pipeline(cfg, until="data")
    (runs / "teacher-path.txt").write_text(str(teacher_pt))
    me = [str(Path(__file__).resolve()), "--worker", "--runs-dir", str(runs), "--images", str(images)]
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    launches = {
        "1 process × 1 thread": [sys.executable, *me],
        "1 process × 2 threads": [sys.executable, *me],
        "torchrun 2 gloo processes × 1 thread": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node", "2", *me],
    }
    rows = {}
    for name, cmd in launches.items():
        out = runs / f"processes-{len(rows)}.json"
        threads = "2" if "2 threads" in name else "1"
        done = subprocess.run([*cmd, "--out", str(out)], env={**env, "OMP_NUM_THREADS": threads}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name}: failed\n{done.stderr[-3000:]}")
        rows[name] = json.loads(out.read_text())
    base = rows["1 process × 1 thread"]
    for r in rows.values():
        for k in ("teacher training", "KD step (default teacher)"):
            r[f"{k} ×"] = r[k] / base[k]
    return {"rows": rows, "images": images, "batch": BATCH}


def part_top1(runs: Path, seeds: list[int]) -> dict:
    """The distill stage, every seed, with each teacher setting: top-1 mean ± std and the recorded costs."""
    from pipeline.run import run_pipeline

    teacher_pt = ensure_teacher(runs)
    rows = {}
    for name, distill in TEACHERS.items():
        raw = student_config(runs, teacher_pt, f"top1-{hash_json(distill)[:8]}", distill, seeds)
        m = run_pipeline(validate_config(raw, source="train_throughput.py"), until="distill")["distill"].metrics
        rows[name] = {"top1_mean": 100 * m["test_acc_mean"], "top1_std": 100 * m["test_acc_std"],
                      "per_seed": {str(r["seed"]): 100 * r["test_acc"] for r in m["seeds"]},
                      "teacher_ms_per_batch": m["teacher_ms_per_batch"], "student_ms_per_batch": m["student_ms_per_batch"],
                      "seconds_per_epoch": m["seconds_per_epoch"], "teacher_top1": 100 * m["teacher_test_acc"],
                      "teacher_precision": m["teacher_precision"]}
    return {"rows": rows, "seeds": seeds}


def tables(data: dict) -> str:
    out = []
    if "forward" in data:
        f = data["forward"]
        compiled = f["compile_seconds"] if isinstance(f["compile_seconds"], str) else f"{f['compile_seconds']:.0f} s to compile"
        out += [f"Frozen teacher forward, resnet56, batch {f['batch']}, {f['threads']} thread, median of {f['rounds']} "
                f"interleaved rounds (torch.compile: {compiled}):", "",
                "| variant | ms / batch | speed-up | top-1 agreement with fp32 | top-1 % |", "|---|---|---|---|---|"]
        out += [f"| {k} | {r['ms_per_batch']:.1f} | {r['speedup']:.2f}× | {100 * r['agreement_with_fp32']:.2f} % | {100 * r['top1']:.2f} |"
                for k, r in f["rows"].items()]
        out.append("")
    if "steps" in data:
        s = data["steps"]
        out += [f"Distill step (forward, backward, SGD), batch {s['batch']}, {s['threads']} thread, median of {s['steps']} interleaved steps:", "",
                "| step | ms / step | ÷ student alone | teacher ms / batch |", "|---|---|---|---|"]
        out += [f"| {k} | {r['ms_per_step']:.1f} | {r['ratio_to_student_alone']:.2f} | {r['teacher_ms_per_batch']:.1f} |" for k, r in s["rows"].items()]
        out.append("")
    if "schedule" in data:
        s = data["schedule"]
        out += [f"The distill stage's whole schedule ({s['epochs']} epochs × {s['images']} images, batch {s['batch']}, "
                f"{s['threads']} thread), mean over every step, {s['rounds']} rounds taking turns:", "",
                "| kind | ms / step | ÷ student alone | s / schedule | teacher ms / batch | teacher batches computed / reused |",
                "|---|---|---|---|---|---|"]
        out += [f"| {k} | {r['ms_per_step']:.1f} | {r['ratio_to_student_alone']:.2f} | {r['seconds']:.1f} | {r['teacher_ms_per_batch']:.1f} | "
                + (f"{r['teacher_batches_computed']} / {r['teacher_batches_reused']}" if "teacher_batches_computed" in r else "—") + " |"
                for k, r in s["rows"].items()]
        out.append("")
    if "processes" in data:
        p = data["processes"]
        out += [f"Training throughput through `fit`, {p['images']} images, batch {p['batch']} (global), second epoch timed:", "",
                "| processes | teacher training img/s | × | KD step img/s | × |", "|---|---|---|---|---|"]
        out += [f"| {k} | {r['teacher training']:.0f} | {r['teacher training ×']:.2f} | {r['KD step (default teacher)']:.0f} | "
                f"{r['KD step (default teacher) ×']:.2f} |" for k, r in p["rows"].items()]
        out.append("")
    if "steps224" in data:
        g = data["steps224"]
        out += [f"Distill step at 224 px, {g['teacher']} → {g['student']}, batch {g['batch']}, on {g['device']} "
                f"(torch {g['torch']}), median of {g['steps']} interleaved steps, random images:", "",
                "| step | ms / step | ÷ student alone | images / s | teacher ms / batch |", "|---|---|---|---|---|"]
        out += [f"| {k} | {r['ms_per_step']:.1f} | {r['ratio_to_student_alone']:.2f} | {r['images_per_s']:.0f} | "
                f"{r['teacher_ms_per_batch']:.1f} |" for k, r in g["rows"].items()]
        out.append("")
    if "top1" in data:
        t = data["top1"]
        out += [f"Student top-1 after distillation, seeds {t['seeds']}:", "",
                "| teacher forward | top-1 % (mean ± std) | per seed | teacher ms / batch | student ms / batch |", "|---|---|---|---|---|"]
        out += [f"| {k} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {', '.join(f'{v:.2f}' for v in r['per_seed'].values())} | "
                f"{r['teacher_ms_per_batch']:.1f} | {r['student_ms_per_batch']:.1f} |" for k, r in t["rows"].items()]
    return "\n".join(out)


def merge(part: str, result: dict) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data["budget"] = BUDGET
    data[part] = {**result, "measured": time.strftime("%Y-%m-%d")}
    atomic_write_json(RESULTS, data)


def main() -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS[:5]),
                        help="default: the five CPU parts (steps224 is meant for a GPU)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON the parts merge into")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--rounds", type=int, default=20, help="forward: interleaved rounds")
    parser.add_argument("--steps", type=int, default=30, help="steps: interleaved steps per kind")
    parser.add_argument("--schedule-rounds", type=int, default=2, help="schedule: whole schedules per kind, taking turns")
    parser.add_argument("--images", type=int, default=2048, help="processes: training images per epoch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--table", action="store_true", help="print the stored tables and stop")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    RESULTS = args.results
    if args.table:
        print(tables(json.loads(RESULTS.read_text())))
        return 0
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")) if args.worker else 1)
    if args.worker:
        worker_processes(args.runs_dir, args.out, args.images)
        return 0
    run = {"forward": lambda: part_forward(args.runs_dir, args.rounds), "steps": lambda: part_steps(args.runs_dir, args.steps),
           "schedule": lambda: part_schedule(args.runs_dir, args.schedule_rounds),
           "processes": lambda: part_processes(args.runs_dir, args.images), "top1": lambda: part_top1(args.runs_dir, args.seeds),
           "steps224": lambda: part_steps224(args.steps)}
    for part in args.parts:
        merge(part, run[part]())
        print(tables({part: json.loads(RESULTS.read_text())[part]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
