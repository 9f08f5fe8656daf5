"""A content-addressed stage store that several run folders share: a finished stage is computed once, then linked in.

A stage's cache key (``pipeline.run.cache_key``) already names everything that shapes its outputs: its
config sections and every earlier stage's, the upstream outputs' hashes, what it reads from outside the run,
and the package version; the run's name and folder are not in it. So two runs that agree on the data and
teacher sections have the same data and teacher keys, and the store keeps one copy of each under
``<store>/<stage>/<key>/``. ``python -m pipeline sweep`` gives every trial the sweep's store: the data split
and the teacher are made by the first trial that needs them and linked into every other trial's run folder.

Two processes that need the same missing entry do not both compute it: ``claim`` holds an ``flock`` on the
entry's lock file (the kernel drops it however its holder dies), the second waits, then finds it stored.
An entry is written as ``<key>.partial`` and renamed when complete, like a stage folder, so a killed writer
leaves nothing that is taken as finished. Files are hard-linked into run folders (stages never modify their
inputs in place; a different filesystem gets copies). ``events.jsonl`` records each computed / fetched entry,
one line each, which the sweep report counts. The store works on a shared filesystem (NFS with working
``flock``) as on one machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.artifacts import MANIFEST, Manifest, verify_outputs

EVENTS_FILE = "events.jsonl"
SHARED_STAGES = ("data", "teacher", "distill", "qat", "export", "target")  # benchmark and report run in every run


class StageStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:32]

    @contextmanager
    def claim(self, stage: str, key: str) -> Iterator[None]:
        """Hold the entry's lock: one process computes a missing entry while the others wait for it."""
        lock = self.root / "locks" / f"{stage}-{key[:32]}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def fetch(self, stage: str, key: str, folder: Path, run: str) -> Manifest | None:
        """Link the stored stage into ``folder`` (replacing what is there) and return its manifest; None when the
        store has no complete, unchanged entry for ``key``."""
        entry = self.entry(stage, key)
        manifest = Manifest.read(entry)
        if manifest is None or manifest.cache_key != key or not verify_outputs(entry, manifest):
            return None
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _link_tree(entry, partial)
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
        self._event("fetched", stage, key, run)
        return manifest

    def publish(self, stage: str, key: str, folder: Path, run: str) -> None:
        """Store a finished stage folder under its key (no-op when already stored)."""
        entry = self.entry(stage, key)
        if (entry / MANIFEST).is_file():
            return
        partial = entry.with_name(entry.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _link_tree(folder, partial)
        partial.rename(entry)
        self._event("computed", stage, key, run)

    def events(self) -> list[dict]:
        path = self.root / EVENTS_FILE
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a killed writer
        return out

    def counts(self, runs_under: Path | None = None) -> dict[str, dict[str, int]]:
        """stage -> {"computed": n, "fetched": m}, from the event log; only the runs in ``runs_under`` if given."""
        under = None if runs_under is None else Path(runs_under).resolve()
        out: dict[str, dict[str, int]] = {}
        for e in self.events():
            if under is not None and under not in Path(e["run"]).resolve().parents:
                continue
            out.setdefault(e["stage"], {"computed": 0, "fetched": 0})[e["event"]] += 1
        return out

    def _event(self, event: str, stage: str, key: str, run: str) -> None:
        line = json.dumps({"event": event, "stage": stage, "key": key[:32], "run": run, "pid": os.getpid(),
                           "time": time.time()}) + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode())  # one write of one short line: appends from several processes never interleave
        finally:
            os.close(fd)


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` a copy of ``src`` made of hard links (copies across filesystems)."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link, symlinks=False)
