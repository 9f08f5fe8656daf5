"""Files the pipeline writes: atomic, with the mode the umask gives (readable by the board user, a web server…)."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.artifacts import atomic_write_bytes, atomic_write_json, current_umask, read_artifacts
from pipeline.device.pack import write_bundle
from pipeline.errors import PipelineError, one_line
from pipeline.stages import ARTIFACTS_FILE, STAGES, stage_folder


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


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_stage_folder_is_the_stage_table_folder(tmp_path, stage):
    assert stage_folder(tmp_path, stage.name) == tmp_path / stage.folder


def test_read_artifacts_reads_the_list_and_says_how_to_mend_its_absence(tmp_path):
    export = stage_folder(tmp_path, "export")
    with pytest.raises(PipelineError, match=f"{ARTIFACTS_FILE}: missing; re-run the export stage"):
        read_artifacts(export)
    with pytest.raises(PipelineError, match="missing; finish the export stage first"):
        read_artifacts(export, remedy="finish the export stage first")
    export.mkdir()
    atomic_write_json(export / ARTIFACTS_FILE, {"onnx": "student.onnx"})
    assert read_artifacts(export) == {"onnx": "student.onnx"}
