"""Files the pipeline writes: atomic, with the mode the umask gives (readable by the board user, a web server…)."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.artifacts import atomic_write_bytes, current_umask
from pipeline.device.pack import write_bundle
from pipeline.errors import one_line


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_and_bundles_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_bytes(tmp_path / "report.md", b"# report\n")
        (tmp_path / "model.tflite").write_bytes(b"model")
        write_bundle(tmp_path / "b.tar", {"models/model.tflite": tmp_path / "model.tflite"}, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.tar").stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "model.tflite", "report.md"]  # no temp file left


def test_one_line_collapses_and_cuts_at_a_word_boundary():
    text = "RuntimeError: Error(s) in loading state_dict for CifarResNet:\n\tsize mismatch for conv1.weight: " + "x" * 10
    assert one_line(text, 200) == " ".join(text.split())
    cut = one_line(text, 60)
    assert cut == "RuntimeError: Error(s) in loading state_dict for…" and len(cut) <= 60  # not "CifarResN"
    assert one_line(ValueError()) == "ValueError" and one_line("a" * 50, 10) == "a" * 9 + "…"
