"""Remote runs: the exact ssh/scp/docker command lines, and the sequence stopping at the first failure."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from pipeline.device import remote
from pipeline.device.remote import RemoteSpec, remote_commands, run_remote
from pipeline.errors import PipelineError


def _spec(**kw):
    base = dict(ssh="pi@raspberrypi.local", target="rpi4", image="edge-pipeline/rpi:0.1.0", name="pi4")
    return RemoteSpec(**{**base, **kw})


def test_rpi_commands_copy_run_fetch_in_order(tmp_path):
    steps = remote_commands(_spec(threads=4, runs=100), tmp_path / "rpi4.tar", tmp_path / "pi4.json")
    assert [s for s, _ in steps] == ["prepare", "copy bundle", "run", "fetch results"]
    (_, prep), (_, copy), (_, run), (_, fetch) = steps
    assert prep == ["ssh", "pi@raspberrypi.local", "mkdir -p /tmp/edge-pipeline && rm -f /tmp/edge-pipeline/results.json"]
    assert copy == ["scp", "-q", str(tmp_path / "rpi4.tar"), "pi@raspberrypi.local:/tmp/edge-pipeline/bundle.tar"]
    assert fetch == ["scp", "-q", "pi@raspberrypi.local:/tmp/edge-pipeline/results.json", str(tmp_path / "pi4.json")]
    assert run[:2] == ["ssh", "pi@raspberrypi.local"] and len(run) == 3
    assert shlex.split(run[2]) == [
        "docker", "run", "--rm", "-v", "/tmp/edge-pipeline:/bundle", "edge-pipeline/rpi:0.1.0",
        "run", "/bundle/bundle.tar", "-o", "/bundle/results.json", "--name", "pi4", "--threads", "4", "--runs", "100",
    ]


def test_coral_gets_the_usb_bus_and_ports_are_spelled_per_tool(tmp_path):
    spec = _spec(ssh="me@coral-host", target="edge_tpu", image="edge-pipeline/coral:0.1.0", name="coral",
                 port=2222, identity="~/.ssh/id_ed25519", ssh_options=("StrictHostKeyChecking=accept-new",))
    (_, prep), (_, copy), (_, run), _ = remote_commands(spec, tmp_path / "b.tar", tmp_path / "r.json")
    assert prep[:7] == ["ssh", "-p", "2222", "-i", "~/.ssh/id_ed25519", "-o", "StrictHostKeyChecking=accept-new"]
    assert copy[:8] == ["scp", "-q", "-P", "2222", "-i", "~/.ssh/id_ed25519", "-o", "StrictHostKeyChecking=accept-new"]
    docker = shlex.split(run[-1])
    assert docker[docker.index("--device") + 1] == "/dev/bus/usb"
    assert docker.index("--device") < docker.index("edge-pipeline/coral:0.1.0")  # docker flags before the image


def test_no_docker_runs_the_installed_runner_and_quotes_paths(tmp_path):
    spec = _spec(image=None, remote_dir="/home/pi/edge-runs", python="/home/pi/edge env/bin/python")
    steps = dict(remote_commands(spec, tmp_path / "b.tar", tmp_path / "r.json"))
    assert shlex.split(steps["prepare"][-1])[:3] == ["mkdir", "-p", "/home/pi/edge-runs"]
    assert shlex.split(steps["run"][-1])[:6] == [
        "/home/pi/edge env/bin/python", "-m", "pipeline.device", "run", "/home/pi/edge-runs/bundle.tar", "-o"]


@pytest.mark.parametrize("field, value, message", [
    ("ssh", "pi@host; rm -rf /", "--ssh"),
    ("name", "../../etc", "--name"),
    ("remote_dir", "relative/dir", "--remote-dir"),
    ("remote_dir", "/tmp/x;touch /tmp/pwned", "--remote-dir '/tmp/x;touch /tmp/pwned': use only"),
    ("remote_dir", "/home/pi/edge runs", "--remote-dir '/home/pi/edge runs': use only"),
    ("remote_dir", "/tmp/$(id)", "--remote-dir"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, field, value, message):
    with pytest.raises(PipelineError, match=message):
        remote_commands(_spec(**{field: value}), tmp_path / "b.tar", tmp_path / "r.json")


def test_run_remote_stops_at_the_first_failing_step(tmp_path, monkeypatch):
    made, calls, merged = [], [], []
    monkeypatch.setattr("pipeline.device.bundle.make_bundle", lambda run, target, out: made.append((target, out)))
    monkeypatch.setattr("pipeline.device.merge.merge_into_report", lambda run, paths: merged.append(paths), raising=False)

    def fake(argv):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 255 if argv[0] == "ssh" and "docker" in argv[-1] else 0)

    with pytest.raises(PipelineError, match=r"remote run failed \(exit 255\): ssh pi@raspberrypi.local 'docker run"):
        run_remote(tmp_path / "run", _spec(), runner=fake)
    assert made == [("rpi4", tmp_path / "run" / "device" / "rpi4.tar")]
    assert len(calls) == 3 and not merged  # no fetch, no merge after a failed run

    calls.clear()
    out = run_remote(tmp_path / "run", _spec(), runner=lambda argv: calls.append(argv) or subprocess.CompletedProcess(argv, 0))
    assert out == tmp_path / "run" / "device" / "pi4.json" and len(calls) == 4
    assert merged == [[out]]


def test_default_images_name_the_docker_folders():
    from pipeline.target import TARGETS

    root = Path(__file__).resolve().parent.parent / "docker"
    images = {t: remote.default_image(t) for t in TARGETS if remote.default_image(t)}
    assert set(images) == {"edge_tpu", "rpi4"}
    for target, image in images.items():
        folder = image.split("/")[1].split(":")[0]
        assert (root / folder / "Dockerfile").is_file(), (target, image)
        assert image.endswith(":" + remote.IMAGE_VERSION)


def test_cli_remote_fills_image_and_name_from_target_and_host(tmp_path, monkeypatch, capsys):
    from pipeline.device.__main__ import main

    seen = []
    monkeypatch.setattr(remote, "run_remote", lambda run, spec, merge=True: seen.append((run, spec, merge)) or tmp_path / "r.json")
    assert main(["remote", str(tmp_path), "--ssh", "pi@raspberrypi.local", "--target", "edge_tpu", "--threads", "1,0"]) == 0
    run, spec, merge = seen[-1]
    assert spec.image == remote.default_image("edge_tpu") and spec.name == "raspberrypi.local" and merge
    assert spec.threads == "1,0"
    assert main(["remote", str(tmp_path), "--ssh", "me@box", "--target", "rpi4", "--no-docker", "--no-merge"]) == 0
    assert seen[-1][1].image is None and seen[-1][2] is False
    assert main(["remote", str(tmp_path), "--ssh", "me@box", "--target", "openvino_npu"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --target openvino_npu: no default image; pass --image IMAGE or --no-docker")


def test_pipeline_device_is_the_remote_run(tmp_path, monkeypatch):
    """``python -m pipeline device RUN --ssh …`` (the issue's spelling) forwards to ``pipeline.device remote``."""
    from pipeline.__main__ import main

    seen = []
    monkeypatch.setattr(remote, "run_remote", lambda run, spec, merge=True: seen.append((run, spec)) or tmp_path / "r.json")
    assert main(["device", str(tmp_path), "--ssh", "pi@pi4", "--target", "rpi4", "--image", "mine:1"]) == 0
    run, spec = seen[-1]
    assert str(run) == str(tmp_path) and spec.image == "mine:1" and spec.name == "pi4"


def test_runner_exit_1_still_fetches_and_merges_then_names_the_failed_rows(tmp_path, monkeypatch):
    from test_report import device_results

    from pipeline.device.remote import RowsFailed

    merged = []
    monkeypatch.setattr("pipeline.device.bundle.make_bundle", lambda run, target, out: None)
    monkeypatch.setattr("pipeline.device.merge.merge_into_report", lambda run, paths: merged.append(paths), raising=False)

    def board(argv):  # the runner wrote results with one failed row (no Edge TPU) and exited 1
        if argv[0] == "scp" and argv[-1].endswith("pi4.json"):
            Path(argv[-1]).parent.mkdir(parents=True, exist_ok=True)
            Path(argv[-1]).write_text(json.dumps(device_results()))
        return subprocess.CompletedProcess(argv, 1 if argv[0] == "ssh" and "docker" in argv[-1] else 0)

    with pytest.raises(RowsFailed) as err:
        run_remote(tmp_path / "run", _spec(), runner=board)
    results = tmp_path / "run" / "device" / "pi4.json"
    assert merged == [[results]] and err.value.exit_code == 1
    assert str(err.value) == (f"{results}: 1 of 2 rows failed on the board (tflite_edgetpu threads=4: PipelineError: "
                              "Edge TPU delegate libedgetpu.so.1: failed to load; no Edge TPU visible); the other rows are merged "
                              "into the report")


def test_a_bad_remote_dir_fails_before_the_bundle_is_built(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr("pipeline.device.bundle.make_bundle", lambda run, target, out: made.append(out))
    with pytest.raises(PipelineError, match="--remote-dir"):
        run_remote(tmp_path / "run", _spec(remote_dir="/tmp/a b"), runner=lambda argv: None)
    assert made == []
