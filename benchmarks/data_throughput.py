"""Streaming image folders (issue 16): training images/s and peak memory of the pipeline's loader against
torchvision's ImageFolder + DataLoader, with the same transforms and worker counts.

A folder of generated 224×224 JPEGs (10 classes) at 1k, 4k and 16k images; for each size and
0, 1, 2 workers, one training epoch (RandomResizedCrop 224 + flip + normalise, batch 64, shuffled)
through each loader, alternating ours / torchvision ``--repeats`` times (best of each). Each epoch
runs in a fresh process (imports and loader construction are not timed); memory is sampled every
50 ms: peak RSS of the main process, and peak RSS summed over it and its workers (pages a worker
shares with its parent count in both, alike for both loaders; PSS would not double-count them, but
reading it costs ~60 ms of CPU per process here, which would slow what is measured). Also the
data stage's one decoding pass (``scan``).

    python benchmarks/data_throughput.py --folder /tmp/dt-images               # generate + measure
    python benchmarks/data_throughput.py --folder /tmp/dt-images --sizes 1000   # one size
    python benchmarks/data_throughput.py --table

Goal (issue 16): ≥ 0.9× torchvision's images/s, and peak memory growing < 20 % from 1k to 16k.
Timings come from a shared 2-core machine: compare the ratios within one row. Images per CPU-second
(user + system time of the process and its workers) is also given: it moves less with other load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline.artifacts import atomic_write_json  # noqa: E402

RESULTS = ROOT / "results" / "data_throughput.json"
SIZE, BATCH, CLASSES = 224, 64, 10
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LOADERS = ("pipeline", "torchvision")


def generate(folder: Path, n: int) -> Path:
    """``folder/n<k>/<class>/<i>.jpg``: the first n of one pool of smooth random 224×224 JPEGs (linked, not copied)."""
    import numpy as np
    from PIL import Image

    pool = folder / "pool"
    rng = np.random.default_rng(0)
    for i in range(n):
        path = pool / f"{i % CLASSES}" / f"{i:06d}.jpg"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            base = rng.normal(0, 12, (SIZE // 8, SIZE // 8, 3)).cumsum(0).cumsum(1) + 128
            img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)
            img.save(path, quality=90)
    out = folder / f"n{n}"
    for i in range(n):
        link = out / f"{i % CLASSES}" / f"{i:06d}.jpg"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(pool / f"{i % CLASSES}" / f"{i:06d}.jpg")
    return out


class MemorySampler(threading.Thread):
    """Peak RSS of this process, and of it plus its children (DataLoader workers), sampled every 50 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.peak_rss = self.peak_total = 0
        self.stop = threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            total = 0
            for p in [self.me, *self.me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_total = max(self.peak_total, total)
            self.peak_rss = max(self.peak_rss, self.me.memory_info().rss)
            self.stop.wait(0.05)


def loader_for(kind: str, root: Path, workers: int):
    import torch
    from torch.utils.data import DataLoader

    from pipeline.data.folder import list_folder, train_transform

    transform = train_transform(SIZE, 3, (MEAN, STD), ["crop", "flip"])
    if kind == "torchvision":
        from torchvision.datasets import ImageFolder

        dataset = ImageFolder(str(root), transform=transform)
        return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                          generator=torch.Generator().manual_seed(0), persistent_workers=False)
    from pipeline.data.folder import ImageFiles
    from pipeline.train.data import make_loader

    index = list_folder(root, warn=lambda line: None)
    dataset = ImageFiles(root, list(zip(index.files, index.labels.tolist())), transform, random=True, workers=workers)
    return make_loader(dataset, BATCH, shuffle=True, seed=0)


def measure_one(kind: str, root: Path, workers: int) -> dict:
    """One training epoch through one loader (run in a fresh process by ``measure``)."""
    import torch

    from pipeline.data.folder import list_folder, scan

    torch.set_num_threads(1)
    loader = None if kind == "scan" else loader_for(kind, root, workers)
    sampler = MemorySampler()
    sampler.start()
    cpu0, t0 = os.times(), time.perf_counter()
    if loader is None:
        images = len(scan(list_folder(root, warn=lambda line: None), SIZE, 3, workers).readable)
    else:
        images = sum(len(y) for _, y in loader)
    seconds = time.perf_counter() - t0
    del loader  # shuts down and reaps the workers, so their CPU time is counted below
    gc.collect()
    cpu1 = os.times()
    cpu = sum(b - a for a, b in zip(cpu0[:4], cpu1[:4]))  # user + system, this process and its reaped children
    sampler.stop.set()
    sampler.join()
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, "images_per_cpu_s": images / cpu,
            "peak_rss_mb": sampler.peak_rss / 2**20, "peak_total_rss_mb": sampler.peak_total / 2**20}


def measure(kind: str, root: Path, workers: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", kind, "--root", str(root), "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                   "PYTHONPATH": str(ROOT.parent)})
    if done.returncode != 0:
        raise SystemExit(f"{kind} {root} workers={workers}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(data: dict) -> str:
    lines = ["| images | workers | pipeline img/s | torchvision img/s | ratio | ratio per CPU-second | "
             "pipeline peak RSS MB, all (main) | torchvision peak RSS MB, all (main) |", "|---|---|---|---|---|---|---|---|"]
    for key in sorted(data.get("rows", {}), key=lambda k: tuple(int(v) for v in k.split("/"))):
        r = data["rows"][key]
        n, w = key.split("/")
        p, t = r["pipeline"], r["torchvision"]
        lines.append(f"| {int(n):,} | {w} | {p['images_per_s']:.0f} | {t['images_per_s']:.0f} | {p['images_per_s'] / t['images_per_s']:.2f} "
                     f"| {p['images_per_cpu_s'] / t['images_per_cpu_s']:.2f} "
                     f"| {p['peak_total_rss_mb']:.0f} ({p['peak_rss_mb']:.0f}) | {t['peak_total_rss_mb']:.0f} ({t['peak_rss_mb']:.0f}) |")
    growth = data.get("growth", {})
    if growth:
        lines += ["", "Peak RSS (all processes) at the largest size ÷ at the smallest, per worker count (goal < 1.20): "
                  + ", ".join(f"{w} workers: pipeline {g['pipeline']:.3f}, torchvision {g['torchvision']:.3f}" for w, g in growth.items())]
    if data.get("scan"):
        lines += ["", "Data stage, one decoding pass over the folder (2 workers): "
                  + ", ".join(f"{int(n):,} images {s['seconds']:.1f} s ({s['peak_total_rss_mb']:.0f} MB)" for n, s in sorted(data["scan"].items(), key=lambda kv: int(kv[0])))]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/data-throughput"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--one", choices=(*LOADERS, "scan"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(RESULTS.read_text())))
        return 0
    if args.one:
        print(json.dumps(measure_one(args.one, args.root, args.workers[0])))
        return 0
    rows, scans = {}, {}
    for n in args.sizes:
        root = generate(args.folder, n)
        scans[str(n)] = measure("scan", root, 2)
        for w in args.workers:
            best: dict[str, dict] = {}
            for _ in range(args.repeats):
                for kind in LOADERS:
                    r = measure(kind, root, w)
                    if kind not in best or r["images_per_s"] > best[kind]["images_per_s"]:
                        best[kind] = {**r, "peak_total_rss_mb": max(r["peak_total_rss_mb"], best.get(kind, r)["peak_total_rss_mb"]),
                                      "peak_rss_mb": max(r["peak_rss_mb"], best.get(kind, r)["peak_rss_mb"])}
            rows[f"{n}/{w}"] = best
            print(f"{n} images, {w} workers: " + ", ".join(f"{k} {v['images_per_s']:.0f} img/s {v['peak_total_rss_mb']:.0f} MB" for k, v in best.items()), flush=True)
    lo, hi = str(min(args.sizes)), str(max(args.sizes))
    growth = {str(w): {k: rows[f"{hi}/{w}"][k]["peak_total_rss_mb"] / rows[f"{lo}/{w}"][k]["peak_total_rss_mb"] for k in LOADERS} for w in args.workers}
    data = {"rows": rows, "growth": growth, "scan": scans, "batch": BATCH, "size": SIZE, "repeats": args.repeats,
            "measured": time.strftime("%Y-%m-%d"), "transform": "RandomResizedCrop(224) + flip + normalise"}
    atomic_write_json(RESULTS, data)
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
