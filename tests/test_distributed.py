"""torchrun data-parallel training (issue 17): two gloo processes × 1 thread each on the CPU.

The processes are real (torchrun, or two plain processes with torchrun's environment), bounded in
time; each test takes seconds to tens of seconds on a 2-core machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.artifacts import Manifest
from pipeline.config import load_config
from pipeline.models.checkpoint import load_checkpoint
from pipeline.run import run_pipeline, stage_dir
from pipeline.train.data import training_data
from pipeline.train.loop import evaluate

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _env(**extra: str) -> dict[str, str]:
    """Two CPU processes on gloo, also on a machine with a GPU (train.device auto would give each a GPU)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **extra}


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_two_processes_train_through_distill_once_and_one_process_reuses_it(tiny_recipe):
    # three distill epochs: the third replays the first (teacher_reuse: 2 gives 2 views), each rank its own shard
    tiny_recipe.write_text(tiny_recipe.read_text().replace("method: kd\n  epochs: 1", "method: kd\n  epochs: 3\n  teacher_reuse: 2"))
    done = torchrun("-m", "pipeline", "run", str(tiny_recipe), "--until", "distill")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # rank 1 is quiet
    cfg = load_config(tiny_recipe)
    # one set of artifacts: no .partial or per-rank folders left behind
    assert sorted(p.name for p in cfg.run_dir.iterdir()) == [".lock", "01_data", "02_teacher", "03_distill", "cache", "config.json"]
    distill = Manifest.read(stage_dir(cfg, "distill"))
    assert distill.placement == {"world_size": 2, "backend": "gloo", "device": "cpu", "precision": "fp32", "sync_bn": False}
    assert Manifest.read(stage_dir(cfg, "teacher")).placement["world_size"] == 2
    assert Manifest.read(stage_dir(cfg, "data")).placement == {}
    # the two ranks trained on disjoint halves of the 300 training images
    shards = distill.metrics["seeds"][0]["shards"]
    assert shards == {"world_size": 2, "images_per_rank": [150, 150], "overlap": 0, "distinct": 300, "dataset": 300}
    # rank 0's 5 batches of 32 per epoch: the teacher ran for the two views, the third epoch reused them
    assert distill.metrics["seeds"][0]["teacher_batches_computed"] == 10 and distill.metrics["seeds"][0]["teacher_batches_reused"] == 5
    # what the stage recorded is what one process measures on the saved student
    student, _ = load_checkpoint(stage_dir(cfg, "distill") / "student.pt")
    data = training_data(stage_dir(cfg, "data"), cfg.data)
    assert evaluate(student, data.test) == distill.metrics["test_acc"]
    assert distill.metrics["teacher_ms_per_batch"] > 0 and distill.metrics["student_ms_per_batch"] > 0
    # a later single-process run is a cache hit for every stage
    again = run_pipeline(cfg, until="distill")
    assert again["distill"].started == distill.started and again["distill"].cache_key == distill.cache_key


EVAL_SCRIPT = """
import sys
import numpy as np
import torch
sys.path.insert(0, {tests!r})
from conftest import TinyNet
from pipeline.config import TrainConfig
from pipeline.data import ArrayDataset
from pipeline.train.distributed import session
from pipeline.train.loop import evaluate, predict_with_labels

torch.set_num_threads(1)
torch.manual_seed(0)
model = TinyNet().eval()
g = torch.Generator().manual_seed(1)
data = ArrayDataset(torch.randn(517, 1, 8, 8, generator=g), torch.randint(0, 10, (517,), generator=g))
with session(TrainConfig(device="cpu")) as place:
    logits, labels = predict_with_labels(model, data, batch_size=64)  # 9 batches: 5 on rank 0, 4 on rank 1
    acc = evaluate(model, data)  # 3 batches of 256, 256, 5
    if place.is_main:
        np.savez(sys.argv[1], logits=logits, labels=labels, acc=acc, world=place.world_size)
"""


def test_evaluation_under_two_ranks_equals_one_process(tmp_path):
    script = tmp_path / "evaluate.py"
    script.write_text(EVAL_SCRIPT.format(tests=str(TESTS)))
    alone = subprocess.run([sys.executable, str(script), str(tmp_path / "one.npz")], env=_env(), capture_output=True,
                           text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr[-2000:]
    two = torchrun(str(script), str(tmp_path / "two.npz"), timeout=180)
    assert two.returncode == 0, two.stderr[-2000:]
    one, both = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert int(one["world"]) == 1 and int(both["world"]) == 2
    assert both["logits"].shape == (517, 10)  # nothing dropped or duplicated by uneven shards
    np.testing.assert_array_equal(both["logits"], one["logits"])
    np.testing.assert_array_equal(both["labels"], one["labels"])
    assert float(both["acc"]) == float(one["acc"])


FAILING_RANK = """
import sys
import pipeline.teacher.stage
from pipeline.__main__ import main
from pipeline.errors import PipelineError

if sys.argv[2] == "fail":
    def run(ctx):
        raise PipelineError("teacher: injected failure on this rank")
    pipeline.teacher.stage.run = run
sys.exit(main(["run", sys.argv[1], "--until", "distill", "--set", "train.timeout_s=60"]))
"""


def test_a_failing_rank_fails_the_run_with_one_line_each_and_no_hang(tiny_recipe, tmp_path):
    """Two processes started the way any launcher does (torchrun's environment, no torchrun agent to kill
    the survivor): rank 1 fails in the teacher stage; rank 0, waiting in a collective, must not hang."""
    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen([sys.executable, str(script), str(tiny_recipe), "fail" if rank == 1 else "ok"],
                         env=_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                  MASTER_PORT=str(port)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for rank in range(2)
    ]
    try:
        errs = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    lines = [[line for line in err.splitlines() if line.startswith("error:")] for err in errs]
    assert procs[1].returncode == 2 and lines[1] == ["error: teacher: injected failure on this rank"], errs[1][-2000:]
    assert procs[0].returncode == 1 and len(lines[0]) == 1, errs[0][-2000:]
    assert lines[0][0].startswith("error: rank 0: lost the other training processes (")
    assert "Traceback" not in errs[0] + errs[1]


def test_rank_zero_failing_leaves_the_others_silent(tiny_recipe, tmp_path):
    """A failure inside work rank 0 does alone (here the data stage) reaches every rank; only rank 0 prints it."""
    cfg = load_config(tiny_recipe)
    broken = tiny_recipe.with_name("broken.yaml")
    broken.write_text(tiny_recipe.read_text().replace("dataset: digits", "dataset: image_folder\n  root: /nonexistent"))
    done = torchrun("-m", "pipeline", "run", str(broken), "--until", "teacher", timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and errors == ["error: data.root: /nonexistent is not a folder"], done.stderr[-2000:]
    assert not (cfg.run_dir.parent / "broken" / "01_data").exists()
