"""The Docker images, checked without a Docker engine: pinned bases and packages, what they copy
exists and is let through their .dockerignore, the entry points, and the compile image's script
run for real against a stand-in edgetpu_compiler."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
IMAGES = ("rpi", "coral", "compile")


def _instructions(image: str) -> list[tuple[str, str]]:
    text = (DOCKER / image / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _allowed_by_dockerignore(image: str, path: str) -> bool:
    """BuildKit's <Dockerfile>.dockerignore: last matching pattern wins, '!' re-includes."""
    allowed = True
    for pattern in (DOCKER / image / "Dockerfile.dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (DOCKER / "requirements-device.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version), f"not pinned: {line}"
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize("image", IMAGES)
def test_base_pinned_and_copies_exist_and_pass_the_dockerignore(image):
    ins = _instructions(image)
    base = next(rest for word, rest in ins if word == "FROM")
    assert re.fullmatch(r"[a-z0-9./-]+:\d+(\.\d+)+[A-Za-z0-9.-]*", base), f"unpinned base image {base}"
    copies = [shlex.split(rest) for word, rest in ins if word == "COPY"]
    assert copies
    for *sources, _dest in copies:
        for src in sources:
            assert (REPO / src).exists(), f"{image}: COPY {src} does not exist"
            assert _allowed_by_dockerignore(image, src), f"{image}: COPY {src} is excluded by its .dockerignore"
    assert not _allowed_by_dockerignore(image, "runs") and not _allowed_by_dockerignore(image, ".git")


@pytest.mark.parametrize("image", ["rpi", "coral"])
def test_runner_images_install_the_tested_requirements_without_deps(image):
    ins = _instructions(image)
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "pip install --no-deps -r requirements-device.txt" in runs
    assert "pip install --no-deps ." in runs
    assert "'torch' not in sys.modules" in runs  # the build fails if the runner pulls torch in
    assert json.loads(dict(ins)["ENTRYPOINT"]) == ["python", "-m", "pipeline.device"]
    pins = _requirements()
    assert pins["numpy"] == "1.26.4" and pins["ai-edge-litert"] == "2.1.0"
    assert not {"torch", "tensorflow", "torchvision"} & set(pins)


def test_coral_image_installs_libedgetpu_for_each_arch_from_either_source():
    ins = _instructions("coral")
    args = {rest.split("=")[0]: rest.partition("=")[2] for word, rest in ins if word == "ARG"}
    assert args["LIBEDGETPU"] == "feranick" and "TARGETARCH" in args
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "packages.cloud.google.com/apt coral-edgetpu-stable main" in runs
    assert '"libedgetpu1-std=${CORAL_LIBEDGETPU_VERSION}"' in runs
    assert "${LIBEDGETPU_DEB}_${TARGETARCH}.deb" in runs and "libusb-1.0-0" in runs


def test_device_extra_is_covered_by_the_pinned_requirements():
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["device"]
    names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in extra}
    assert names <= set(_requirements()), names - set(_requirements())


def test_readme_has_build_and_run_lines_for_every_image():
    text = (DOCKER / "README.md").read_text()
    for image in IMAGES:
        assert f"## {image}" in text
        assert re.search(rf"docker (buildx )?build .*-f docker/{image}/Dockerfile -t edge-pipeline/{image}:0\.1\.0", text), image
        assert re.search(rf"docker run --rm .*edge-pipeline/{image}:0\.1\.0", text), image
    assert "--device /dev/bus/usb" in text and "--privileged -v /dev/bus/usb:/dev/bus/usb" in text


@pytest.fixture
def fake_compiler(tmp_path):
    """A stand-in edgetpu_compiler that records its arguments and writes what the real one would."""
    script = tmp_path / "edgetpu_compiler"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        "open(os.environ['FAKE_LOG'], 'w').write(json.dumps(args))\n"
        "if '-o' in args:\n"
        "    out, model = args[args.index('-o') + 1], args[-1]\n"
        "    stem = os.path.basename(model)[:-len('.tflite')]\n"
        "    open(os.path.join(out, stem + '_edgetpu.tflite'), 'wb').write(b'compiled')\n"
        "    print('Input model: ' + os.path.basename(model))\n"
        "sys.exit(int(os.environ.get('FAKE_RC', '0')))\n"
    )
    script.chmod(0o755)
    return script


def _compile_run(args, fake_compiler, tmp_path, **env):
    env = {**os.environ, "EDGETPU_COMPILER": str(fake_compiler), "FAKE_LOG": str(tmp_path / "log.json"), **env}
    return subprocess.run(["sh", str(DOCKER / "compile" / "compile-run.sh"), *args],
                          capture_output=True, text=True, env=env, timeout=30)


def test_compile_entrypoint_compiles_the_runs_int8_model_into_06_target(tmp_path, fake_compiler):
    run = tmp_path / "runs" / "edge_tpu"
    (run / "05_export" / "tflite").mkdir(parents=True)
    (run / "05_export" / "tflite" / "student_int8.tflite").write_bytes(b"int8")
    (run / "05_export" / "artifacts.json").write_text(json.dumps({"tflite_int8": "tflite/student_int8.tflite", "onnx": "s.onnx"}))
    done = _compile_run([str(run), "-a"], fake_compiler, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "log.json").read_text()) == [
        "-s", "-o", f"{run}/06_target", "-a", f"{run}/05_export/tflite/student_int8.tflite"]
    assert (run / "06_target" / "student_int8_edgetpu.tflite").read_bytes() == b"compiled"
    assert (run / "06_target" / "edgetpu_compiler.log").read_text() == "Input model: student_int8.tflite\n"  # kept, and shown
    assert "Input model: student_int8.tflite" in done.stdout
    assert "python -m pipeline target RUN --compiled RUN/06_target" in done.stdout

    # the bundle side finds what the compile image wrote
    from pipeline.device.bundle import compiled_model
    from pipeline.target import TARGETS

    assert compiled_model(run, TARGETS["edge_tpu"].compiler) == run / "06_target" / "student_int8_edgetpu.tflite"

    done = _compile_run([str(run)], fake_compiler, tmp_path, FAKE_RC="1")
    assert done.returncode == 1 and "python -m pipeline target" not in done.stdout  # a refusal keeps its exit status

    done = _compile_run(["--version"], fake_compiler, tmp_path)  # anything else passes straight through
    assert done.returncode == 0 and json.loads((tmp_path / "log.json").read_text()) == ["--version"]


def test_compile_entrypoint_errors_are_one_line_exit_2(tmp_path, fake_compiler):
    run = tmp_path / "run"
    run.mkdir()
    done = _compile_run([str(run)], fake_compiler, tmp_path)
    assert done.returncode == 2 and "05_export/artifacts.json: missing" in done.stderr
    (run / "05_export").mkdir()
    (run / "05_export" / "artifacts.json").write_text(json.dumps({"onnx": "s.onnx"}))
    done = _compile_run([str(run)], fake_compiler, tmp_path)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "no tflite_int8 artifact" in done.stderr
