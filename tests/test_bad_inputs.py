"""Bad inputs, faults and attacks (issue 18): one case per row of ``CASES``, each must end in ONE line.

Every case prepares files under a fresh folder, runs the command line in-process
(``python -m pipeline …`` or ``python -m pipeline.device …`` through their ``main``; a second
process only where processes matter) and is scored by ``score``:

* ``one line``: the expected exit code, exactly one ``error:``/``warning:`` line on stderr that names
  the file or key, no traceback, and the case's ``check`` finds nothing wrong left behind (no stage
  folder a later run would take as finished, no file written outside the run, no command run);
* ``traceback``: an exception escaped, or a traceback was printed;
* ``silent``: exit 0 where an error (or a warning) was due, or the harm happened unreported;
* ``other``: anything else (several lines, another exit code, a line that names neither file nor key).

``python tests/test_bad_inputs.py`` prints the scored table without pytest (run it against another
checkout, with that checkout on PYTHONPATH, to score old code). Image-folder and checkpoint cases
belong to their own issues' tests.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

from conftest import TINY_RECIPE  # noqa: E402
from test_report import device_results, make_results  # noqa: E402

PROGRESS = ("▶", "✓", "→", "done in", "precheck ")  # stage progress on stderr: not messages


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # after `python -m pipeline` ("device-run …": after `python -m pipeline.device run`)
    expect: str  # the one line names this (a file, a key, a flag)
    code: int = 2
    setup: Callable | None = None  # (tmp, monkeypatch) -> None
    check: Callable | None = None  # (tmp) -> a problem left behind, or None
    warning: bool = False  # a warning line with exit 0, not an error
    concurrent: bool = False  # a first run is started in another process before this one


# --- setups ----------------------------------------------------------------------------------------------------


def _recipe(tmp: Path, name: str = "tiny.yaml", text: str | None = None) -> Path:
    path = tmp / name
    path.write_text((TINY_RECIPE if text is None else text) + f"runs_dir: {tmp / 'runs'}\n")
    return path


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _idx_folder(tmp: Path, n_train: int = 300, n_labels: int = 300) -> Path:
    folder = tmp / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 8, 8)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_labels) % 10)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (50, 8, 8)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(50) % 10)
    return folder


def _fashion(tmp: Path, mp, **kw) -> None:
    folder = _idx_folder(tmp, **kw)
    _recipe(tmp, text=TINY_RECIPE.replace("dataset: digits", f"dataset: fashion_mnist\n  root: {folder}"))


def setup_idx_label_mismatch(tmp, mp):
    _fashion(tmp, mp, n_train=300, n_labels=250)


def setup_idx_3_bytes(tmp, mp):
    _fashion(tmp, mp)
    (tmp / "idx" / "train-images-idx3-ubyte.gz").unlink()
    (tmp / "idx" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")


def setup_gz_not_gzip(tmp, mp):
    _fashion(tmp, mp)
    (tmp / "idx" / "train-labels-idx1-ubyte.gz").write_bytes(b"these are not gzip bytes at all")


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def setup_cifar_pickle(tmp, mp):
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _RunsCommand(tmp / "pwned"), b"labels": [0]}, f)
    _recipe(tmp, text=TINY_RECIPE.replace("dataset: digits", f"dataset: cifar10\n  root: {tmp / 'cifar'}"))


def setup_mnist_pickle(tmp, mp):
    (tmp / "mnist").mkdir()
    with gzip.open(tmp / "mnist" / "mnist.pkl.gz", "wb") as f:
        pickle.dump(_RunsCommand(tmp / "pwned"), f)
    _recipe(tmp, text=TINY_RECIPE.replace("dataset: digits", f"dataset: mnist\n  root: {tmp / 'mnist'}"))


def setup_recipe(tmp, mp):
    _recipe(tmp)


def setup_little_memory(tmp, mp):
    _recipe(tmp)
    import psutil

    real = psutil.virtual_memory()
    mp.setattr(psutil, "virtual_memory", lambda: real._replace(available=2 << 30))  # a 2 GiB machine


def setup_duplicate_section(tmp, mp):
    _recipe(tmp, text=TINY_RECIPE + "distill:\n  method: at\n")


def setup_duplicate_key(tmp, mp):
    _recipe(tmp, text=TINY_RECIPE.replace("  epochs: 4\n", "  epochs: 4\n  epochs: 40\n"))


def setup_not_utf8(tmp, mp):
    (tmp / "tiny.yaml").write_bytes(b"name: caf\xe9\n" + f"runs_dir: {tmp / 'runs'}\n".encode())


def setup_alias_bomb(tmp, mp):
    """'Billion laughs': nine levels of nine aliases, 9⁹ strings once expanded."""
    lines = ["lol: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    _recipe(tmp, text=TINY_RECIPE + "\n".join(lines) + "\n")


def setup_deep_yaml(tmp, mp):
    _recipe(tmp, text=TINY_RECIPE + "extra: " + "[" * 50_000 + "]" * 50_000 + "\n")


def setup_invisible_key(tmp, mp):
    _recipe(tmp, text=TINY_RECIPE.replace("  epochs: 1\nqat:", "  epochs\u200b: 1\nqat:"))


def _checkpoint(tmp: Path, edit) -> None:
    """A pipeline checkpoint of resnet8 (1 channel, digits' 10 classes) that ``edit`` spoils, as teacher.checkpoint."""
    import torch

    from pipeline.models import build_model

    torch.manual_seed(0)
    blob = {"arch": "resnet8", "arch_args": {}, "num_classes": 10, "in_channels": 1,
            "state_dict": build_model("resnet8", 10, 1).state_dict()}
    edit(blob)
    torch.save(blob, tmp / "teacher.pt")
    _recipe(tmp)


def setup_checkpoint_arch_42(tmp, mp):
    _checkpoint(tmp, lambda b: b.update(arch=42))


def setup_checkpoint_state_dict_list(tmp, mp):
    _checkpoint(tmp, lambda b: b.update(state_dict=list(b["state_dict"].values())))


def setup_checkpoint_nan(tmp, mp):
    _checkpoint(tmp, lambda b: b["state_dict"]["conv1.weight"].view(-1)[3].fill_(float("nan")))


def setup_checkpoint_negative_var(tmp, mp):
    _checkpoint(tmp, lambda b: b["state_dict"]["bn1.running_var"].fill_(-1.0))


def setup_state_dict_inf(tmp, mp):
    """A plain state_dict (arch from the config) with an inf in the classifier."""
    import torch

    from pipeline.models import build_model

    state = build_model("resnet8", 10, 1).state_dict()
    state["fc.weight"][0, 0] = float("inf")
    torch.save(state, tmp / "teacher.pt")
    _recipe(tmp)


def _image_folder(tmp: Path, split: bool = False) -> Path:
    """Two classes of 25 8×8 PNGs (under train/ and test/ when ``split``), as the tiny recipe's data."""
    from PIL import Image

    root = tmp / "imgs"
    for part in (("train", "test") if split else ("",)):
        for label, name in enumerate(("a", "b")):
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(25):
                Image.new("L", (8, 8), 40 + 120 * label + i).save(folder / f"{i}.png")
    _recipe(tmp, text=TINY_RECIPE.replace("dataset: digits", f"dataset: image_folder\n  root: {root}"))
    return root


def setup_folder_symlink_out(tmp, mp):
    from PIL import Image

    root = _image_folder(tmp)
    (tmp / "elsewhere").mkdir()
    Image.new("L", (8, 8), 7).save(tmp / "elsewhere" / "secret.png")
    (root / "a" / "link.png").symlink_to(tmp / "elsewhere" / "secret.png")


def setup_folder_bomb(tmp, mp):
    """A PNG of a few dozen bytes whose header claims 30 000 × 30 000 pixels (9×10⁸, past PIL's limit)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 1, 0, 0, 0, 0)  # 1-bit grey
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    (_image_folder(tmp) / "a" / "bomb.png").write_bytes(png)


def setup_folder_test_only_class(tmp, mp):
    from PIL import Image

    root = _image_folder(tmp, split=True)
    (root / "test" / "c").mkdir()
    Image.new("L", (8, 8), 3).save(root / "test" / "c" / "0.png")


def outside_recorded(tmp):
    from pipeline.artifacts import Manifest

    m = Manifest.read(tmp / "runs" / "tiny" / "01_data")
    return None if m and m.metrics.get("skipped_outside_root") == 1 else "the skipped link is not counted in the data manifest"


def _finished(tmp: Path, folder: str, run: str = "tiny") -> str | None:
    """A finished stage folder that should not exist (a later run would take it as done)."""
    path = tmp / "runs" / run / folder
    return f"{path} left as finished" if path.is_dir() else None


def _trained(tmp: Path, mp) -> None:
    """A copy of a run finished through qat (distill weights, no QAT epochs), built once per process."""
    src = _trained_run()
    _recipe(tmp, text=_TRAINED_RECIPE)
    shutil.copytree(src, tmp / "runs" / "tiny", symlinks=True)
    (tmp / "runs" / "tiny" / ".lock").unlink(missing_ok=True)


_TRAINED_RECIPE = TINY_RECIPE.replace("  epochs: 4\n", "  epochs: 1\n").replace("qat:\n  epochs: 1\n", "qat:\n  enabled: false\n")
_TRAINED: list[Path] = []


def _trained_run() -> Path:
    if not _TRAINED:
        import torch

        from pipeline.config import load_config
        from pipeline.run import run_pipeline

        tmp = Path(tempfile.mkdtemp(prefix="bad-inputs-trained-"))
        recipe = _recipe(tmp, text=_TRAINED_RECIPE)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                run_pipeline(load_config(recipe), until="qat")
        finally:
            torch.set_num_threads(threads)
        _TRAINED.append(tmp / "runs" / "tiny")
    return _TRAINED[0]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def setup_disk_full_data(tmp, mp):
    _recipe(tmp)
    import pipeline.artifacts
    import pipeline.data.stage

    real = pipeline.artifacts.atomic_write_bytes

    def half_then_full(path, data):
        if Path(path).name == "calibration.npy":
            Path(path).write_bytes(data[: len(data) // 2])
            _enospc()
        real(path, data)

    mp.setattr(pipeline.artifacts, "atomic_write_bytes", half_then_full)
    mp.setattr(pipeline.data.stage, "atomic_write_bytes", half_then_full)


def setup_disk_full_onnx(tmp, mp):
    _trained(tmp, mp)
    import torch

    mp.setattr(torch.onnx, "export", _enospc)


def setup_disk_full_openvino(tmp, mp):
    """OpenVINO's C++ writer on a full disk: a RuntimeError without errno, and (almost) no space left."""
    _trained(tmp, mp)
    import openvino

    def iostream_error(*args, **kwargs):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1287: basic_ios::clear: iostream error")

    mp.setattr(openvino, "save_model", iostream_error)
    real = shutil.disk_usage
    mp.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=4096))


def setup_disk_full_onnx2tf(tmp, mp):
    """onnx2tf's child process runs out of space: a stand-in onnx2tf module fails as the real one does."""
    _trained(tmp, mp)
    fake = tmp / "fake_onnx2tf"
    fake.mkdir()
    (fake / "onnx2tf.py").write_text("def convert(**kwargs):\n    raise OSError(28, 'No space left on device')\n")
    mp.setenv("PYTHONPATH", os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))


def setup_read_only_run(tmp, mp):
    """A run folder nobody may write: chmod, and (root ignores modes) the same refusal from the OS calls."""
    recipe = _recipe(tmp)
    from pipeline.__main__ import main

    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", str(recipe), "--until", "data"]) == 0
    folder = tmp / "runs" / "tiny"
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    if os.geteuid() != 0:
        return
    inside = lambda p: str(Path(os.fsdecode(p)).absolute()).startswith(str(folder))  # noqa: E731

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    real_mkdir, real_os_open, real_open = os.mkdir, os.open, io.open

    def mkdir(path, *a, **kw):
        if inside(path) and not os.path.exists(path):
            refuse(path)
        return real_mkdir(path, *a, **kw)

    def os_open(path, flags, *a, **kw):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **kw)

    def open_(file, mode="r", *a, **kw):
        if isinstance(file, (str, bytes, os.PathLike)) and inside(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **kw)

    mp.setattr(os, "mkdir", mkdir)
    mp.setattr(os, "open", os_open)
    mp.setattr(io, "open", open_)
    mp.setattr("builtins.open", open_)


# --- device side ---------------------------------------------------------------------------------------------------

EXPORTED = {"tflite_fp32": "student_fp32.tflite", "tflite_int8": "student_int8.tflite"}


def _stub_run(tmp: Path, mp, built_for: str = "edge_tpu") -> Path:
    """A run folder with what `bundle`/`report` read: stand-in artifacts and sidecars, benchmark results;
    the test sample and host predictions stubbed (no model runs)."""
    import pipeline.device.bundle as bundle_mod

    run = tmp / "runs" / "demo"
    export = run / "05_export"
    export.mkdir(parents=True)
    io_dtype = "uint8" if built_for == "edge_tpu" else "int8"
    for key, rel in EXPORTED.items():
        (export / rel).write_bytes(key.encode() * 10)
        (export / f"{rel}.json").write_text(json.dumps({"format": key, "input": {"dtype": io_dtype if "int8" in key else "float32"}}))
    (export / "artifacts.json").write_text(json.dumps(EXPORTED))
    results = make_results()
    results["run"]["target"] = built_for
    (run / "07_benchmark").mkdir()
    (run / "07_benchmark" / "benchmark.json").write_text(json.dumps(results))
    x, y = np.zeros((7, 1, 8, 8), np.float32), np.arange(7) % 3
    mp.setattr(bundle_mod, "test_sample", lambda run_dir, n: (x[:n], y[:n]))
    mp.setattr(bundle_mod, "host_predictions", lambda path, xs: np.zeros(len(xs), np.int64))
    return run


FAKE_SSH = """#!{python}
import os, sys
command = sys.argv[-1]
sys.exit(int(os.environ.get("FAKE_RUN_RC", "0")) if "pipeline.device" in command or "docker run" in command else 0)
"""
# scp's legacy protocol (the default before OpenSSH 9.0) sends `scp -t PATH` / `scp -f PATH` to the board's shell
FAKE_SCP = """#!{python}
import os, shutil, subprocess, sys
src, dst = [a for a in sys.argv[1:] if not a.startswith("-")][-2:]
remote = dst if ":" in dst else src
subprocess.run(["sh", "-c", "true -t " + remote.split(":", 1)[1]])
if remote is src:
    shutil.copyfile(os.environ["FAKE_BOARD_RESULTS"], dst)
"""


def _fake_board(tmp: Path, mp, run_rc: int = 0, rows=None) -> None:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("scp", FAKE_SCP)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    results = device_results()
    if rows is not None:
        results["rows"] = rows
    (tmp / "board.json").write_text(json.dumps(results))
    mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    mp.setenv("FAKE_RUN_RC", str(run_rc))
    mp.setenv("FAKE_BOARD_RESULTS", str(tmp / "board.json"))


def setup_scp_injection(tmp, mp):
    _stub_run(tmp, mp, built_for="rpi4")
    _fake_board(tmp, mp)


def setup_partial_board(tmp, mp):
    _stub_run(tmp, mp, built_for="rpi4")
    _fake_board(tmp, mp, run_rc=1)


def _bundle(tmp: Path, manifest_edit=None, extra_members: dict[str, bytes] | None = None, x=None) -> Path:
    """A bundle whose hashes verify; ``manifest_edit`` changes bundle.json before its files table is made; ``x``
    replaces the sample's images."""
    from pipeline.device.pack import write_bundle

    torch_model = _tiny_onnx(tmp / "src" / "model.onnx")
    sample = tmp / "src" / "sample.npz"
    with open(sample, "wb") as f:
        np.savez(f, x=np.zeros((2, 1, 8, 8), np.float32) if x is None else x, y=np.zeros(2, np.int64))
    files = {"models/model.onnx": torch_model, "sample.npz": sample}
    for name, data in (extra_members or {}).items():
        (tmp / "src" / name.replace("/", "_")).write_bytes(data)
        files[name] = tmp / "src" / name.replace("/", "_")
    manifest = {"run": "demo", "target": "rpi4", "runtime": "onnxruntime", "runtime_device": "CPU",
                "settings": {"warmup": 0, "min_runs": 1, "min_seconds": 0.0, "threads": [1]},
                "deploy_artifact": "onnx",
                "sample": {"path": "sample.npz", "split": "test", "count": 2, "shape": [2, 1, 8, 8]},
                "artifacts": {"onnx": {"path": "models/model.onnx", "sidecar": None, "format": "onnx", "host": None}}}
    if manifest_edit:
        manifest_edit(manifest)
    write_bundle(tmp / "bundle.tar", files, manifest)
    return tmp / "bundle.tar"


def _tiny_onnx(path: Path) -> Path:
    from conftest import TinyNet
    from pipeline.export.torch2onnx import torch2onnx

    return torch2onnx(TinyNet(), (1, 8, 8), path)


def setup_bundle_absolute_path(tmp, mp):
    secret = _tiny_onnx(tmp / "elsewhere" / "any.onnx")  # a file outside the bundle, never hashed
    _bundle(tmp, lambda m: m["artifacts"]["onnx"].update(path=str(secret)))


def setup_bundle_dotdot_path(tmp, mp):
    _tiny_onnx(tmp / "elsewhere" / "any.onnx")
    _bundle(tmp, lambda m: m["artifacts"]["onnx"].update(path="models/../../elsewhere/any.onnx"))


def setup_bundle_file_and_folder(tmp, mp):
    _bundle(tmp, extra_members={"models/x": b"a file", "models/x/y": b"a file in a folder of that name"})


def setup_bundle_ok(tmp, mp):
    _bundle(tmp)


def setup_bundle_warmup_abc(tmp, mp):
    _bundle(tmp, lambda m: m["settings"].update(warmup="abc"))


def setup_bundle_min_seconds_huge(tmp, mp):
    _bundle(tmp, lambda m: m["settings"].update(min_seconds=1e12))


def setup_bundle_threads_huge(tmp, mp):
    _bundle(tmp, lambda m: m["settings"].update(threads=[100000]))


def setup_bundle_empty_sample(tmp, mp):
    _bundle(tmp, lambda m: m.update(sample={}))


def setup_bundle_object_sample(tmp, mp):
    _bundle(tmp, x=np.array([_RunsCommand(tmp / "pwned"), None], dtype=object))


def _append_member(bundle: Path, name: str, claimed: int, data: bytes, listed: bool) -> None:
    """Append a member whose tar header claims ``claimed`` bytes but holds ``data`` (a 2.5 GB member without 2.5 GB of
    disk); ``listed``: add it to bundle.json's files table first. Written block by block, bundle.json first."""
    with tarfile.open(bundle) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]
    if listed:
        manifest = json.loads(members[0][1])
        manifest["files"][name] = "0" * 64
        members[0] = (members[0][0], json.dumps(manifest).encode())
    big = tarfile.TarInfo(name)
    big.size = claimed
    with open(bundle, "wb") as f:
        for info, body in members:
            info.size = len(body)
            f.write(info.tobuf(tarfile.PAX_FORMAT) + body + b"\0" * (-len(body) % 512))
        f.write(big.tobuf(tarfile.PAX_FORMAT) + data)


def setup_bundle_huge_member(tmp, mp):
    _append_member(_bundle(tmp), "models/big.bin", 2_500_000_000, b"x" * 4096, listed=True)


def setup_bundle_unlisted_huge_member(tmp, mp):
    _append_member(_bundle(tmp), "models/extra.bin", 2_500_000_000, b"x" * 4096, listed=False)


def setup_not_a_tar(tmp, mp):
    (tmp / "bundle.tar").write_bytes(b"hello, not a tar\n")


def setup_stub_run(tmp, mp):
    _stub_run(tmp, mp)


def setup_foreign_device_rows(tmp, mp):
    """A board's results with a row for openvino_int8, which the run never exported."""
    _stub_run(tmp, mp)
    results = device_results()
    results["rows"][1].update(artifact="openvino_int8", format="openvino_int8", file="openvino_int8/student.xml")
    (tmp / "board.json").write_text(json.dumps(results))


def setup_compile_log_lies(tmp, mp):
    """An edge_tpu run whose Edge TPU compile (made elsewhere) runs one op on the CPU while its logs say all are mapped."""
    from report_fakes import write_run
    from test_compiled_import import compiled_dir, tflite_bytes
    from test_edgetpu_compiler import FULL_LOG_FILE, FULL_STDOUT

    from pipeline.artifacts import Manifest, hash_outputs

    folder = write_run(tmp / "runs" / "demo", config={"name": "demo", "target": {"name": "edge_tpu"}})
    export = folder / "05_export"
    (export / "student_int8.tflite").write_bytes(tflite_bytes("FULLY_CONNECTED"))
    (export / "student_int8.tflite.json").write_text(json.dumps({"format": "tflite_int8", "input": {"dtype": "uint8"}}))
    (export / "artifacts.json").write_text(json.dumps({"tflite_int8": "student_int8.tflite"}))
    m = Manifest.read(folder / "06_target")
    m.outputs = hash_outputs(folder / "06_target")
    m.write(folder / "06_target")
    compiled_dir(tmp / "compiled", model=tflite_bytes("edgetpu-custom-op", more_ops=("FULLY_CONNECTED",)),
                 log=FULL_LOG_FILE, stdout=FULL_STDOUT)


def cpu_op_recorded(tmp):
    from pipeline.artifacts import Manifest

    result = Manifest.read(tmp / "runs" / "demo" / "06_target").metrics.get("compiler_result") or {}
    return None if result.get("ops_cpu") == 1 else f"ops_cpu recorded as {result.get('ops_cpu')}, the compiled file has 1"


def setup_corrupt_baseline(tmp, mp):
    _stub_run(tmp, mp)
    (tmp / "runs" / "base").mkdir()
    (tmp / "runs" / "base" / "report.json").write_text('{"kind": "report", "runs": [')  # cut short


def setup_not_a_report_baseline(tmp, mp):
    _stub_run(tmp, mp)
    (tmp / "runs" / "base").mkdir()
    (tmp / "runs" / "base" / "report.json").write_text('{"environment": []}')


def _onnx_graph(path: Path, inputs: list[tuple[str, list]], initializer=None, ops=("Identity",)) -> Path:
    """A small ONNX graph with these inputs (name, shape; a str dim is dynamic) feeding ``ops``, all in float."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in inputs]
    inits = [numpy_helper.from_array(initializer, "w")] if initializer is not None else []
    names = [n for n, _ in inputs] + [i.name for i in inits]
    nodes = [helper.make_node(ops[0], names if ops[0] != "Identity" else names[:1], ["y"])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", ins, [out], inits), opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def setup_onnx_two_inputs(tmp, mp):
    _recipe(tmp)
    _onnx_graph(tmp / "m.onnx", [("image", [1, 1, 8, 8]), ("mask", [1, 1, 8, 8])], ops=("Add",))


def setup_onnx_truncated(tmp, mp):
    _recipe(tmp)
    data = _tiny_onnx(tmp / "m.onnx").read_bytes()
    (tmp / "m.onnx").write_bytes(data[: len(data) // 2])


def setup_onnx_dynamic_hw(tmp, mp):
    _recipe(tmp)
    _onnx_graph(tmp / "m.onnx", [("image", ["N", 1, "height", "width"])])


def _external(tmp: Path, location: str) -> None:
    """An ONNX whose initializer's external data is named ``location`` (edited after saving it beside the model)."""
    import onnx

    _recipe(tmp)
    path = _onnx_graph(tmp / "model" / "m.onnx", [("image", [1, 1, 8, 8])], initializer=np.ones((1, 1, 8, 8), np.float32),
                       ops=("Add",))
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, str(path))


def setup_onnx_external_dotdot(tmp, mp):
    (tmp / "secret.bin").write_bytes(b"\0" * 256)
    _external(tmp, "../secret.bin")


def setup_onnx_external_symlink(tmp, mp):
    (tmp / "secret.bin").write_bytes(b"\0" * 256)
    _external(tmp, "w.bin")
    (tmp / "model" / "w.bin").unlink()
    (tmp / "model" / "w.bin").symlink_to(tmp / "secret.bin")


def setup_ir_doctype(tmp, mp):
    _recipe(tmp)
    (tmp / "m.xml").write_text('<?xml version="1.0"?>\n<!DOCTYPE net [<!ENTITY x SYSTEM "file:///etc/hostname">]>\n'
                               '<net name="x" version="11">&x;</net>\n')
    (tmp / "m.bin").write_bytes(b"")


def setup_ir_bin_symlink(tmp, mp):
    _recipe(tmp)
    (tmp / "model").mkdir()
    (tmp / "secret.bin").write_bytes(b"\0" * 64)
    (tmp / "model" / "m.xml").write_text('<?xml version="1.0"?>\n<net name="x" version="11"><layers/></net>\n')
    (tmp / "model" / "m.bin").symlink_to(tmp / "secret.bin")


def setup_sidecar_lies(tmp, mp):
    """student.onnx (float) with a sidecar saying it is an OpenVINO int8 IR."""
    _recipe(tmp)
    path = _tiny_onnx(tmp / "student.onnx")
    (tmp / "student.onnx.json").write_text(json.dumps({"format": "openvino_int8", "input": {"dtype": "float32"}}))
    assert path.is_file()


def setup_bad_device_rows(tmp, mp):
    _stub_run(tmp, mp)
    bad = device_results()
    bad["rows"][1]["latency_ms"]["p50"] = "fast"  # rows[1]: the CPU row (the Edge TPU row failed, without latency)
    (tmp / "board.json").write_text(json.dumps(bad))


# --- the concurrent first run --------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


# The first run, in its own process: a real `run`, held at the start of its teacher stage until the second
# attempt is over, so the two overlap whatever the machine's speed.
HELD_RUN = """
import sys, time
from pathlib import Path
import pipeline.teacher.stage as teacher
train = teacher.run
def run(ctx):
    Path(sys.argv[1]).touch()
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
    return train(ctx)
teacher.run = run
from pipeline.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


@contextlib.contextmanager
def first_run(tmp: Path):
    """`run --until teacher` in another process, yielded while it is inside its teacher stage; its exit code is kept."""
    recipe = _recipe(tmp, text=TINY_RECIPE.replace("  epochs: 4\n", "  epochs: 1\n"))
    started, go = tmp / "teacher-started", tmp / "go"
    proc = subprocess.Popen([sys.executable, "-c", HELD_RUN, str(started), str(go), "run", str(recipe), "--until", "teacher"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the first run did not reach its teacher stage: {proc.stderr.read()}")
        time.sleep(0.05)
    try:
        yield proc
    finally:
        go.touch()
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        FIRST[str(tmp)] = (proc.returncode, proc.stderr.read())


FIRST: dict[str, tuple] = {}


def check_first_run_untouched(tmp):
    rc, err = FIRST.get(str(tmp), (None, ""))
    if rc != 0 or "Traceback" in err:
        return f"the first run failed (exit {rc}): {err.strip().splitlines()[-1:] }"
    from pipeline.artifacts import Manifest, verify_outputs

    folder = tmp / "runs" / "tiny" / "02_teacher"
    m = Manifest.read(folder)
    if m is None or not verify_outputs(folder, m):
        return "the first run's teacher stage is not intact"
    return None


# --- checks ----------------------------------------------------------------------------------------------------------


def no_marker(tmp):
    return "the crafted input ran a command" if (tmp / "pwned").exists() else None


def nothing(*folders):
    return lambda tmp: next((f"{tmp / f} written" for f in folders if (tmp / f).exists()), None)


def stage_not_finished(folder):
    return lambda tmp: _finished(tmp, folder)


def not_kept(name):
    return lambda tmp: f"{name} kept in the run folder" if (tmp / "runs" / "demo" / "device" / name).exists() else None


def report_untouched(tmp):
    return "the report was rewritten before the baseline was checked" if (tmp / "runs" / "demo" / "report.md").exists() else None


def model_intact(tmp):
    path = tmp / "runs" / "demo" / "05_export" / "student_int8.tflite"
    return None if path.read_bytes() == b"tflite_int8" * 10 else "the packed model was overwritten"


def bundle_intact(tmp):
    return None if tarfile.is_tarfile(tmp / "bundle.tar") else "the bundle was overwritten"


def partial_results_fetched(tmp):
    return None if (tmp / "runs" / "demo" / "device" / "rpi4.json").is_file() else "the board's partial results were not fetched"


RUN = ("run", "{tmp}/tiny.yaml", "--until", "data")
TEACHER_CKPT = ("run", "{tmp}/tiny.yaml", "--until", "teacher", "--set", "teacher.checkpoint={tmp}/teacher.pt")
DEVICE = ("device", "{tmp}/runs/demo", "--ssh", "pi@board", "--target", "rpi4", "--name", "rpi4", "--no-merge")

CASES = [
    # recipe and --set
    Case("image_size 0", (*RUN, "--set", "data.image_size=0"), "data.image_size", setup=setup_recipe),
    Case("image_size negative", (*RUN, "--set", "data.image_size=-8"), "data.image_size", setup=setup_recipe),
    Case("image_size huge", (*RUN, "--set", "data.image_size=1000000"), "data.image_size", setup=setup_recipe),
    Case("image_size beyond memory", (*RUN, "--set", "data.image_size=1024", "--set", "data.max_train=null"),
         "data.image_size", setup=setup_little_memory, check=stage_not_finished("01_data")),
    Case("std [0]", (*RUN, "--set", "data.std=[0]"), "data.std", setup=setup_recipe),
    Case("mean: 3 values, 1 channel", (*RUN, "--set", "data.mean=[0.5, 0.5, 0.5]"), "data.mean", setup=setup_recipe,
         check=stage_not_finished("01_data")),
    Case("calibration_size > data (warning)", (*RUN, "--set", "data.calibration_size=100000"), "data.calibration_size",
         code=0, warning=True, setup=setup_recipe),
    Case("benchmark.threads [-1]", (*RUN, "--set", "benchmark.threads=[-1]"), "benchmark.threads", setup=setup_recipe),
    Case("benchmark.threads []", (*RUN, "--set", "benchmark.threads=[]"), "benchmark.threads", setup=setup_recipe),
    Case("qat.freeze_bn_epoch -1", (*RUN, "--set", "qat.freeze_bn_epoch=-1"), "qat.freeze_bn_epoch", setup=setup_recipe),
    Case("qat.milestones [-1]", (*RUN, "--set", "qat.milestones=[-1]"), "qat.milestones", setup=setup_recipe),
    Case("teacher.milestones [-5]", (*RUN, "--set", "teacher.milestones=[-5]"), "teacher.milestones", setup=setup_recipe),
    Case("duplicate YAML section", RUN, "duplicate key 'distill'", setup=setup_duplicate_section),
    Case("duplicate YAML key", RUN, "duplicate key 'epochs'", setup=setup_duplicate_key),
    Case("name ''", (*RUN, "--set", "name=''"), "name: ''", setup=setup_recipe, check=nothing("runs/01_data")),
    Case("name ../escaped", (*RUN, "--set", "name=../escaped"), "name: '../escaped'", setup=setup_recipe,
         check=nothing("escaped")),
    Case("--from export --until data", ("run", "{tmp}/tiny.yaml", "--from", "export", "--until", "data"), "--from export",
         setup=setup_recipe),
    Case("student.stages: no such module", ("run", "{tmp}/tiny.yaml", "--until", "distill", "--set", "student.stages=[layer9]"),
         "student.stages", setup=setup_recipe, check=stage_not_finished("02_teacher")),
    Case("student.arch_args: unknown", (*RUN, "--set", "student.arch_args={depth_mult: 2}"), "student.arch_args",
         setup=setup_recipe),
    Case("distill.options for kd", (*RUN, "--set", "distill.options={alpha: 1}"), "distill.options: method 'kd' takes no options",
         setup=setup_recipe),
    Case("recipe not UTF-8", RUN, "tiny.yaml: not UTF-8", setup=setup_not_utf8),
    Case("--set bad YAML", (*RUN, "--set", "distill.epochs=[1"), "--set distill.epochs", setup=setup_recipe),
    Case("--set Python tag", (*RUN, "--set", "distill.epochs=!!python/object/apply:os.system [true]"), "--set distill.epochs",
         setup=setup_recipe),
    Case("--set into a scalar", (*RUN, "--set", "distill.epochs.x=1"), "--set distill.epochs.x", setup=setup_recipe),
    # issue 31: bounds on every number, and what YAML can do
    Case("benchmark.threads beyond the cores", (*RUN, "--set", "benchmark.threads=[100000]"), "benchmark.threads: 100000",
         setup=setup_recipe),
    Case("benchmark.min_seconds .inf", (*RUN, "--set", "benchmark.min_seconds=.inf"), "benchmark.min_seconds",
         setup=setup_recipe),
    Case("benchmark.min_seconds 1e12", (*RUN, "--set", "benchmark.min_seconds=1.0e+12"), "benchmark.min_seconds",
         setup=setup_recipe),
    Case("benchmark.min_runs 1e15", (*RUN, "--set", "benchmark.min_runs=1000000000000000"), "benchmark.min_runs",
         setup=setup_recipe),
    Case("teacher.momentum .nan", (*RUN, "--set", "teacher.momentum=.nan"), "teacher.momentum", setup=setup_recipe),
    Case("teacher.momentum 1", (*RUN, "--set", "teacher.momentum=1"), "teacher.momentum", setup=setup_recipe),
    Case("distill.lr .inf", (*RUN, "--set", "distill.lr=.inf"), "distill.lr", setup=setup_recipe),
    Case("distill.weight_decay -1", (*RUN, "--set", "distill.weight_decay=-1"), "distill.weight_decay", setup=setup_recipe),
    Case("qat.gamma .nan", (*RUN, "--set", "qat.gamma=.nan"), "qat.gamma", setup=setup_recipe),
    Case("distill.temperature .inf", (*RUN, "--set", "distill.temperature=.inf"), "distill.temperature", setup=setup_recipe),
    Case("distill.w_kd .nan", (*RUN, "--set", "distill.w_kd=.nan"), "distill.w_kd", setup=setup_recipe),
    Case("distill.options nan (ama beta)", (*RUN, "--set", "distill.method=ama", "--set", "distill.options={beta: .nan}"),
         "distill.options.beta", setup=setup_recipe),
    Case("data.mean [.nan]", (*RUN, "--set", "data.mean=[.nan]"), "data.mean", setup=setup_recipe,
         check=stage_not_finished("01_data")),
    Case("val + test fractions ≥ 1", (*RUN, "--set", "data.val_fraction=0.45", "--set", "data.test_fraction=0.6"),
         "val_fraction + test_fraction", setup=setup_recipe),
    Case("distill.seeds [0, 0]", (*RUN, "--set", "distill.seeds=[0, 0]"), "distill.seeds: seed 0 is given twice",
         setup=setup_recipe),
    Case("YAML alias bomb", RUN, "aliases expand to more than", setup=setup_alias_bomb),
    Case("--set alias bomb", (*RUN, "--set", "distill.options=" + "{a: &a [x, x, x, x, x, x, x, x, x, x], "
                              + ", ".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdef", "bcdefg")) + "}"),
         "--set distill.options", setup=setup_recipe),
    Case("YAML nested 50 000 deep", RUN, "nested too deeply", setup=setup_deep_yaml),
    Case("key with a zero-width space", RUN, "distill.epochs\\u200b: unknown key", setup=setup_invisible_key),
    Case("recipe name with a newline", ("run", "{tmp}/no\nsuch.yaml"), "no\\nsuch.yaml: no such file"),
    # checkpoints (teacher.checkpoint: read when the teacher stage starts)
    Case("checkpoint arch 42", (*TEACHER_CKPT,), "arch is 42", setup=setup_checkpoint_arch_42,
         check=stage_not_finished("02_teacher")),
    Case("checkpoint state_dict a list", (*TEACHER_CKPT,), "state_dict is list", setup=setup_checkpoint_state_dict_list,
         check=stage_not_finished("02_teacher")),
    Case("checkpoint nan weight", (*TEACHER_CKPT,), "tensor conv1.weight holds 1 nan/inf", setup=setup_checkpoint_nan,
         check=stage_not_finished("02_teacher")),
    Case("checkpoint negative BN variance", (*TEACHER_CKPT,), "tensor bn1.running_var has a negative",
         setup=setup_checkpoint_negative_var, check=stage_not_finished("02_teacher")),
    Case("state_dict inf weight", (*TEACHER_CKPT, "--set", "teacher.arch=resnet8"), "tensor fc.weight holds 1 nan/inf",
         setup=setup_state_dict_inf, check=stage_not_finished("02_teacher")),
    Case("arch_args for a 74-billion-parameter model", (*RUN, "--set", "student.arch_args={width: 1000}"),
         "student.arch_args: resnet8 with arch_args {'width': 1000}", setup=setup_recipe),
    Case("list widgets", ("list", "widgets"), "argument what: invalid choice: 'widgets'"),
    # data files
    Case("IDX: 300 images, 250 labels", RUN, "train-labels-idx1-ubyte", setup=setup_idx_label_mismatch,
         check=stage_not_finished("01_data")),
    Case("IDX: 3-byte file", RUN, "train-images-idx3-ubyte", setup=setup_idx_3_bytes),
    Case(".gz that is not gzip", RUN, "train-labels-idx1-ubyte.gz", setup=setup_gz_not_gzip),
    Case("CIFAR batch that runs a command", RUN, "data_batch_1", setup=setup_cifar_pickle, check=no_marker),
    Case("mnist.pkl.gz that runs a command", RUN, "mnist.pkl.gz", setup=setup_mnist_pickle, check=no_marker),
    Case("image_folder: image linking outside data.root (warning)", RUN, "skipped 1 image(s) linking outside", code=0,
         warning=True, setup=setup_folder_symlink_out, check=outside_recorded),
    Case("image_folder: decompression bomb PNG (warning)", RUN, "a/bomb.png (decompression bomb", code=0, warning=True,
         setup=setup_folder_bomb),
    Case("image_folder: test/ class train/ lacks", RUN, "test/ has class folder(s) that train/ lacks: c",
         setup=setup_folder_test_only_class, check=stage_not_finished("01_data")),
    # the run folder
    Case("second run on one folder", ("run", "{tmp}/tiny.yaml", "--until", "teacher"), "in use by another run (PID",
         concurrent=True, check=check_first_run_untouched),
    Case("read-only run folder", ("run", "{tmp}/tiny.yaml", "--until", "teacher", "--set", "teacher.epochs=1"),
         "runs/tiny", setup=setup_read_only_run, check=stage_not_finished("02_teacher")),
    Case("disk full: data", RUN, "disk full", setup=setup_disk_full_data, check=stage_not_finished("01_data")),
    Case("disk full: export, ONNX", ("run", "{tmp}/tiny.yaml", "--until", "export", "--set", "export.formats=[onnx]"),
         "disk full", setup=setup_disk_full_onnx, check=stage_not_finished("05_export")),
    Case("disk full: export, OpenVINO", ("run", "{tmp}/tiny.yaml", "--until", "export", "--set", "export.formats=[onnx, openvino_fp32]"),
         "disk full", setup=setup_disk_full_openvino, check=stage_not_finished("05_export")),
    Case("disk full: export, onnx2tf", ("run", "{tmp}/tiny.yaml", "--until", "export", "--set", "export.formats=[onnx, tflite_int8]"),
         "disk full", setup=setup_disk_full_onnx2tf, check=stage_not_finished("05_export")),
    # device path and reports
    Case("--remote-dir injection (scp)", (*DEVICE, "--remote-dir", "/tmp/x;touch {tmp}/pwned;"), "--remote-dir",
         setup=setup_scp_injection, check=no_marker),
    Case("board exits 1, some rows failed", DEVICE, "tflite_edgetpu threads=", code=1, setup=setup_partial_board,
         check=partial_results_fetched),
    # model files given to `benchmark` / `export` (issue 31)
    Case("benchmark: ONNX with 2 inputs", ("benchmark", "{tmp}/m.onnx", "{tmp}/tiny.yaml"), "takes 2 inputs (image, mask)",
         setup=setup_onnx_two_inputs, check=nothing("runs")),
    Case("benchmark: ONNX cut short", ("benchmark", "{tmp}/m.onnx", "{tmp}/tiny.yaml"), "m.onnx: not a readable ONNX file",
         setup=setup_onnx_truncated, check=nothing("runs")),
    Case("benchmark: ONNX dynamic H/W", ("benchmark", "{tmp}/m.onnx", "{tmp}/tiny.yaml"), "has dynamic H ('height')",
         setup=setup_onnx_dynamic_hw, check=nothing("runs")),
    Case("export: ONNX dynamic H/W", ("export", "{tmp}/m.onnx", "{tmp}/tiny.yaml"), "has dynamic H ('height')",
         setup=setup_onnx_dynamic_hw),
    Case("benchmark: ONNX external data '../'", ("benchmark", "{tmp}/model/m.onnx", "{tmp}/tiny.yaml"),
         "keeps its data in '../secret.bin', outside", setup=setup_onnx_external_dotdot, check=nothing("runs")),
    Case("benchmark: ONNX external data symlink out", ("benchmark", "{tmp}/model/m.onnx", "{tmp}/tiny.yaml"),
         "keeps its data in 'w.bin', outside", setup=setup_onnx_external_symlink, check=nothing("runs")),
    Case("export: ONNX external data '../'", ("export", "{tmp}/model/m.onnx", "{tmp}/tiny.yaml"),
         "keeps its data in '../secret.bin', outside", setup=setup_onnx_external_dotdot),
    Case("benchmark: IR with a DOCTYPE/ENTITY", ("benchmark", "{tmp}/m.xml", "{tmp}/tiny.yaml"), "declares a DOCTYPE or ENTITY",
         setup=setup_ir_doctype, check=nothing("runs")),
    Case("benchmark: IR .bin symlink out", ("benchmark", "{tmp}/model/m.xml", "{tmp}/tiny.yaml"), "m.bin link to",
         setup=setup_ir_bin_symlink, check=nothing("runs")),
    Case("benchmark: sidecar claims another format", ("benchmark", "{tmp}/student.onnx", "{tmp}/tiny.yaml"),
         "sidecar student.onnx.json says openvino_int8, but the file is onnx float", setup=setup_sidecar_lies,
         check=nothing("runs")),
    Case("bundle.json absolute artifact path", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"), "artifacts.onnx.path",
         setup=setup_bundle_absolute_path, check=nothing("r.json")),
    Case("bundle.json '..' artifact path", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"), "artifacts.onnx.path",
         setup=setup_bundle_dotdot_path, check=nothing("r.json")),
    Case("bundle: file beside folder member", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"), "models/x",
         setup=setup_bundle_file_and_folder, check=nothing("r.json")),
    Case("bundle.json settings.warmup 'abc'", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"), "settings.warmup 'abc'",
         setup=setup_bundle_warmup_abc, check=nothing("r.json")),
    Case("bundle.json settings.min_seconds 1e12", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"),
         "settings.min_seconds 1000000000000.0", setup=setup_bundle_min_seconds_huge, check=nothing("r.json")),
    Case("bundle.json settings.threads [100000]", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"),
         "settings.threads [100000]", setup=setup_bundle_threads_huge, check=nothing("r.json")),
    Case("bundle.json empty sample table", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"), "'sample' table",
         setup=setup_bundle_empty_sample, check=nothing("r.json")),
    Case("bundle sample.npz with object arrays", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"),
         "its sample sample.npz is not a test sample", setup=setup_bundle_object_sample,
         check=lambda tmp: no_marker(tmp) or nothing("r.json")(tmp)),
    Case("bundle member of 2.5 GB", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"), "models/big.bin is 2.3 GiB",
         setup=setup_bundle_huge_member, check=nothing("r.json")),
    Case("bundle: unlisted member of 2.5 GB", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"),
         "models/extra.bin is not listed", setup=setup_bundle_unlisted_huge_member, check=nothing("r.json")),
    Case("bundle: not a tar", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/r.json"), "not a bundle tar",
         setup=setup_not_a_tar),
    Case("bundle -o a folder", ("bundle", "{tmp}/runs/demo", "--target", "rpi4", "-o", "{tmp}"), "-o",
         setup=setup_stub_run),
    Case("bundle -o the model it packs", ("bundle", "{tmp}/runs/demo", "--target", "rpi4", "-o",
                                          "{tmp}/runs/demo/05_export/student_int8.tflite"), "is a file this command reads",
         setup=setup_stub_run, check=model_intact),
    Case("device run b.tar -o b.tar", ("device-run", "{tmp}/bundle.tar", "-o", "{tmp}/bundle.tar"), "is a file this command reads",
         setup=setup_bundle_ok, check=bundle_intact),
    Case("bundle for another target (warning)", ("bundle", "{tmp}/runs/demo", "--target", "rpi4", "-o", "{tmp}/rpi4.tar"),
         "built for target edge_tpu", code=0, warning=True, setup=setup_stub_run),
    Case("--device-results: malformed row", ("report", "{tmp}/runs/demo", "--device-results", "{tmp}/board.json"),
         "rows[1].latency_ms", setup=setup_bad_device_rows, check=not_kept("board.json")),
    Case("report --max-accuracy-drop nan", ("report", "{tmp}/runs/demo", "--baseline", "{tmp}/runs/demo",
                                             "--max-accuracy-drop", "nan"), "--max-accuracy-drop", setup=setup_stub_run,
         check=report_untouched),
    Case("report --max-latency-increase -5", ("report", "{tmp}/runs/demo", "--baseline", "{tmp}/runs/demo",
                                               "--max-latency-increase", "-5"), "--max-latency-increase",
         setup=setup_stub_run, check=report_untouched),
    Case("report --baseline: report.json cut short", ("report", "{tmp}/runs/demo", "--baseline", "{tmp}/runs/base"),
         "base/report.json: not valid JSON", setup=setup_corrupt_baseline, check=report_untouched),
    Case("report --baseline: report.json of another shape", ("report", "{tmp}/runs/demo", "--baseline", "{tmp}/runs/base"),
         "base/report.json: not a report", setup=setup_not_a_report_baseline, check=report_untouched),
    Case("--device-results: artifact the run never made", ("report", "{tmp}/runs/demo", "--device-results", "{tmp}/board.json"),
         "rows[1] measured artifact 'openvino_int8', which", setup=setup_foreign_device_rows, check=not_kept("board.json")),
    Case("target --compiled: log says all mapped, file has a CPU op (warning)",
         ("target", "{tmp}/runs/demo", "--compiled", "{tmp}/compiled"), "holds 1 op(s) outside the edgetpu-custom-op",
         code=0, warning=True, setup=setup_compile_log_lies, check=cpu_op_recorded),
    Case("report --baseline missing", ("report", "{tmp}/runs/demo", "--baseline", "{tmp}/runs/nosuch"), "runs/nosuch",
         setup=setup_stub_run, check=report_untouched),
]


# --- running and scoring -------------------------------------------------------------------------------------------

Attempt = namedtuple("Attempt", "code stderr traceback problem")


def attempt(case: Case, tmp: Path) -> Attempt:
    """Run one case in ``tmp`` (the current folder meanwhile): exit code, stderr, a traceback if one escaped, what it left."""
    from pipeline.__main__ import main
    from pipeline.device.__main__ import main as device_main

    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    err, tb, code = io.StringIO(), None, None
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        if case.setup:
            case.setup(tmp, mp)
        with (first_run(tmp) if case.concurrent else contextlib.nullcontext()):
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = device_main(["run", *args[1:]]) if args[0] == "device-run" else main(args)
                except SystemExit as exc:
                    code = exc.code
                except BaseException:  # noqa: BLE001  what escaped is the finding
                    tb = traceback.format_exc()
        problem = case.check(tmp) if case.check else None
    return Attempt(code, err.getvalue(), tb, problem)


def message_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith(PROGRESS)]


def score(case: Case, a: Attempt) -> str:
    if a.traceback or "Traceback (most recent call last)" in a.stderr:
        return "traceback"
    lines = message_lines(a.stderr)
    prefix = "warning:" if case.warning else "error:"
    said = [ln for ln in lines if ln.startswith(prefix)]
    if a.code == 0 and case.code != 0 or (case.warning and not said):
        return "silent"
    if a.problem:
        return "silent" if not said else "other"
    if a.code == case.code and len(lines) == 1 and said and case.expect in said[0]:
        return "one line"
    return "other"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_ends_in_one_line(case, tmp_path):
    a = attempt(case, tmp_path)
    assert a.traceback is None, a.traceback
    assert a.problem is None
    lines = message_lines(a.stderr)
    assert a.code == case.code, a.stderr
    assert len(lines) == 1, a.stderr
    assert lines[0].startswith("warning:" if case.warning else "error:") and case.expect in lines[0], lines[0]
    assert score(case, a) == "one line"


def main(skip: list[str] = ()) -> None:
    """Print the scored table: one row per case, then the totals; cases whose name holds a ``skip`` string are left out
    (an old checkout killed for memory by a case ends the table: ``--skip 'billion-parameter'``)."""
    outcomes = []
    for case in CASES:
        if any(s in case.name for s in skip):
            continue
        with tempfile.TemporaryDirectory(prefix="bad-input-") as tmp:
            tmp = Path(tmp)
            try:
                a = attempt(case, tmp)
                outcome = score(case, a)
                line = (message_lines(a.stderr) or [a.traceback.strip().splitlines()[-1] if a.traceback else ""])[-1]
            except Exception as exc:  # noqa: BLE001  a setup that cannot run on this checkout
                outcome, line = "setup failed", f"{type(exc).__name__}: {exc}"
            finally:
                for p in [tmp, *tmp.rglob("*")]:  # the read-only case: let the folder be removed
                    with contextlib.suppress(OSError):
                        p.chmod(p.stat().st_mode | 0o700)
        outcomes.append(outcome)
        print(f"| {case.name} | {outcome} | {line[:150].replace('|', '/')} |", flush=True)
    kinds = ("one line", "traceback", "silent", "other", "setup failed")
    print("\n| tried | " + " | ".join(kinds) + " |\n|" + "---|" * (len(kinds) + 1))
    print(f"| {len(outcomes)} | " + " | ".join(str(outcomes.count(k)) for k in kinds) + " |")


if __name__ == "__main__":
    main([name for flag, name in zip(sys.argv[1:], sys.argv[2:]) if flag == "--skip"])  # --skip SUBSTRING, repeatable
