"""The bundle container: hashes verified before anything is extracted, tampering refused in one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.device import BUNDLE_FORMAT
from pipeline.device.pack import MANIFEST_NAME, open_bundle, sha256_path, write_bundle
from pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def payload(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.tflite").write_bytes(b"\x00model-bytes" * 100)
    (src / "model.tflite.json").write_text('{"layout": "NHWC"}')
    (src / "sample.npz").write_bytes(b"sample" * 50)
    return {"models/model.tflite": src / "model.tflite", "models/model.tflite.json": src / "model.tflite.json",
            "sample.npz": src / "sample.npz"}


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copy a tar member by member; ``edit(name, data)`` returns new bytes, or None to drop the member."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for info in tin:
            data = edit(info.name, tin.extractfile(info).read())
            if data is None:
                continue
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_roundtrip_and_reproducible_bytes(tmp_path, payload):
    a = write_bundle(tmp_path / "a.tar", payload, {"run": "r", "target": "rpi4"})
    b = write_bundle(tmp_path / "b.tar", payload, {"run": "r", "target": "rpi4"})
    assert a == b == sha256_path(tmp_path / "a.tar")  # same inputs, same bytes
    manifest = open_bundle(tmp_path / "a.tar", tmp_path / "out")
    assert manifest["format"] == BUNDLE_FORMAT and manifest["target"] == "rpi4"
    assert set(manifest["files"]) == set(payload)
    for name, path in payload.items():
        assert (tmp_path / "out" / name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n == "models/model.tflite" else d, "sha256 mismatch for models/model.tflite"),
        (lambda n, d: None if n == "sample.npz" else d, "sample.npz listed in bundle.json is missing"),
        (lambda n, d: json.dumps({**json.loads(d), "format": 99}).encode() if n == MANIFEST_NAME else d, "bundle format 99"),
        (lambda n, d: None if n == MANIFEST_NAME else d, "no bundle.json inside"),
    ],
    ids=["flipped-bit", "missing-file", "other-format", "no-manifest"],
)
def test_tampered_bundle_is_refused_before_extraction(tmp_path, payload, edit, message):
    write_bundle(tmp_path / "ok.tar", payload, {})
    _rewrite(tmp_path / "ok.tar", tmp_path / "bad.tar", edit)
    with pytest.raises(PipelineError, match=message.replace(".", r"\.")) as err:
        open_bundle(tmp_path / "bad.tar", tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written from a bundle that does not verify


def test_unlisted_and_unsafe_members_are_refused(tmp_path, payload):
    write_bundle(tmp_path / "ok.tar", payload, {})
    for name, expected in (("extra.bin", "not listed"), ("../evil.sh", "unsafe member name")):
        bad = tmp_path / f"bad-{len(name)}.tar"
        _rewrite(tmp_path / "ok.tar", bad, lambda n, d: d)
        with tarfile.open(bad, "a") as tar:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        with pytest.raises(PipelineError, match=expected):
            open_bundle(bad, tmp_path / "out")
    with pytest.raises(PipelineError, match="unsafe member name"):
        write_bundle(tmp_path / "x.tar", {"/etc/passwd": payload["sample.npz"]}, {})
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all")
    with pytest.raises(PipelineError, match="not a bundle tar"):
        open_bundle(tmp_path / "junk.tar", tmp_path / "out")


def test_cli_refuses_tampered_bundle_with_one_line_exit_2(tmp_path, payload):
    write_bundle(tmp_path / "ok.tar", payload, {})
    _rewrite(tmp_path / "ok.tar", tmp_path / "bad.tar",
             lambda n, d: d + b"!" if n == "models/model.tflite.json" else d)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pipeline.device", "run", str(tmp_path / "bad.tar"), "-o", str(tmp_path / "r.json")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "sha256 mismatch for models/model.tflite.json" in lines[0]
    assert not (tmp_path / "r.json").exists()
