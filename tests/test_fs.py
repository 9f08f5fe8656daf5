"""A full disk, for real: a small tmpfs as runs_dir (needs root to mount; skipped elsewhere, the battery fakes it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pipeline.__main__ import main


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_data_stage_on_a_full_disk_is_one_line_and_frees_its_partial(tiny_recipe, small_disk, capsys):
    recipe = tiny_recipe.read_text().replace(f"runs_dir: {tiny_recipe.parent / 'runs'}", f"runs_dir: {small_disk}")
    tiny_recipe.write_text(recipe)
    # 32 calibration images of 64×64 float32 are 512 KiB: more than the 256 KiB disk holds
    assert main(["run", str(tiny_recipe), "--until", "data", "--set", "data.image_size=64"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {small_disk}/tiny/01_data.partial: disk full (")
    assert "No space left on device" in lines[0]
    assert not (small_disk / "tiny" / "01_data").exists() and not (small_disk / "tiny" / "01_data.partial").exists()
    assert shutil.disk_usage(small_disk).free > 128 << 10  # the unfinished stage's files are gone
