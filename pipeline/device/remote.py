"""Benchmark a run on a board over ssh: bundle → scp → ``docker run`` → scp back → merge into the report.

The command lines are built by ``remote_commands`` (pure, unit-tested) and run one by one by
``run_remote``; the first that fails stops the sequence with a one-line error naming the
step and the command, so a user can re-run that line by hand. One exception: the runner's
exit 1 means "results written, some rows failed" (e.g. an accelerator's delegate did not load),
so those results are still fetched and merged before the command exits 1 naming the failed
rows. Files land in the run folder: ``RUN/device/<target>.tar`` and ``RUN/device/<name>.json``,
the latter merged into the report.

``--remote-dir`` is checked strictly (letters, digits, ``/._+-``): scp's legacy protocol,
still the default before OpenSSH 9.0, hands the remote path to the board's shell, where a
``;`` or a space would run or break something; ssh command lines are quoted with shlex.

Coral USB: the accelerator re-enumerates with a new USB id when its firmware loads, so the
container gets the whole bus (``--device /dev/bus/usb``), not one device node.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError, one_line

IMAGE_VERSION = "0.1.0"


def default_image(target: str) -> str | None:
    """The docker/ image that runs ``target``'s bundle (``TargetRules.image``), tagged with this version."""
    from pipeline.target import TARGETS

    rules = TARGETS.get(target)
    return f"{rules.image}:{IMAGE_VERSION}" if rules and rules.image else None


CONTAINER_DIR = "/bundle"
RUNNER_ROWS_FAILED = 1  # python -m pipeline.device run: results written, some artifact failed


class RowsFailed(PipelineError):
    """The board ran the bundle and its results are merged, but some rows failed: exit 1, as the runner."""

    exit_code = 1


@dataclass(frozen=True)
class RemoteSpec:
    """Where and how to run: ``ssh`` is ``user@host``; ``image`` None runs the runner installed on the board."""

    ssh: str
    target: str
    image: str | None
    name: str
    remote_dir: str = "/tmp/edge-pipeline"
    port: int | None = None
    identity: str | None = None
    threads: str | int | None = None  # e.g. "1,0"; None = the host benchmark's settings
    runs: int | None = None
    op_time: bool = False  # the runner's --op-time: per-op time of each int8 artifact on the board
    docker_args: tuple[str, ...] = ()
    ssh_options: tuple[str, ...] = field(default_factory=tuple)
    python: str = "python3"


def _check(spec: RemoteSpec) -> None:
    if not re.fullmatch(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._:\[\]-]+", spec.ssh):
        raise PipelineError(f"--ssh {spec.ssh!r}: expected user@host (or a host alias from ~/.ssh/config)")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", spec.name):
        raise PipelineError(f"--name {spec.name!r}: use letters, digits, '.', '_' or '-' (it names the results file)")
    if spec.threads is not None and not re.fullmatch(r"\d+(,\d+)*", str(spec.threads)):
        raise PipelineError(f"--threads {spec.threads!r}: expected thread counts like 1,0 (0 = all cores)")
    if not spec.remote_dir.startswith("/"):
        raise PipelineError(f"--remote-dir {spec.remote_dir!r}: must be an absolute path on the board")
    if not re.fullmatch(r"/[A-Za-z0-9._+/-]*", spec.remote_dir):
        raise PipelineError(f"--remote-dir {spec.remote_dir!r}: use only letters, digits and / . _ + - (scp's legacy "
                            "protocol passes the path to the board's shell, where spaces and ; $ ` ' \" would be interpreted)")


def _ssh_base(spec: RemoteSpec) -> list[str]:
    cmd = ["ssh"]
    if spec.port:
        cmd += ["-p", str(spec.port)]
    if spec.identity:
        cmd += ["-i", spec.identity]
    for opt in spec.ssh_options:
        cmd += ["-o", opt]
    return cmd


def _scp_base(spec: RemoteSpec) -> list[str]:
    cmd = ["scp", "-q"]
    if spec.port:
        cmd += ["-P", str(spec.port)]  # scp spells the port -P, ssh spells it -p
    if spec.identity:
        cmd += ["-i", spec.identity]
    for opt in spec.ssh_options:
        cmd += ["-o", opt]
    return cmd


def runner_args(spec: RemoteSpec, bundle: str, results: str) -> list[str]:
    """Arguments after ``python -m pipeline.device`` (the images' ENTRYPOINT)."""
    args = ["run", bundle, "-o", results, "--name", spec.name]
    if spec.threads is not None:
        args += ["--threads", str(spec.threads)]
    if spec.runs is not None:
        args += ["--runs", str(spec.runs)]
    if spec.op_time:
        args.append("--op-time")
    return args


def remote_run_command(spec: RemoteSpec) -> list[str]:
    """The command run on the board (a list; quoted with shlex.join for ssh)."""
    if spec.image is None:
        return [spec.python, "-m", "pipeline.device",
                *runner_args(spec, f"{spec.remote_dir}/bundle.tar", f"{spec.remote_dir}/results.json")]
    from pipeline.target import TARGETS

    rules = TARGETS.get(spec.target)
    devices = [a for d in (rules.docker_devices if rules else ()) for a in ("--device", d)]
    return ["docker", "run", "--rm", "-v", f"{spec.remote_dir}:{CONTAINER_DIR}", *devices, *spec.docker_args,
            spec.image, *runner_args(spec, f"{CONTAINER_DIR}/bundle.tar", f"{CONTAINER_DIR}/results.json")]


def remote_commands(spec: RemoteSpec, bundle: Path, results: Path) -> list[tuple[str, list[str]]]:
    """(step, argv) pairs that copy the bundle, run it on the board and fetch the results."""
    _check(spec)
    host, rdir = spec.ssh, spec.remote_dir
    return [  # prepare also removes an earlier results file, so a failed run never fetches stale results
        ("prepare", [*_ssh_base(spec), host, f"{shlex.join(['mkdir', '-p', rdir])} && {shlex.join(['rm', '-f', f'{rdir}/results.json'])}"]),
        ("copy bundle", [*_scp_base(spec), str(bundle), f"{host}:{rdir}/bundle.tar"]),
        ("run", [*_ssh_base(spec), host, shlex.join(remote_run_command(spec))]),
        ("fetch results", [*_scp_base(spec), f"{host}:{rdir}/results.json", str(results)]),
    ]


def run_remote(run_dir: Path, spec: RemoteSpec, *, merge: bool = True, runner=subprocess.run) -> Path:
    """Bundle, copy, run, fetch, merge; returns the local results file."""
    from pipeline.device.bundle import make_bundle

    out = Path(run_dir) / "device"
    bundle, results = out / f"{spec.target}.tar", out / f"{spec.name}.json"
    _check(spec)  # before the bundle is built: a bad argument costs nothing
    make_bundle(run_dir, spec.target, bundle)
    rows_failed = False
    for step, argv in remote_commands(spec, bundle, results):
        print(f"[{step}] {shlex.join(argv)}", flush=True)
        done = runner(argv)
        if step == "run" and done.returncode == RUNNER_ROWS_FAILED:
            rows_failed = True  # the runner wrote its results: fetch and merge the rows that did run
        elif done.returncode != 0:
            raise PipelineError(f"remote {step} failed (exit {done.returncode}): {shlex.join(argv)}")
    if merge:
        from pipeline.device.merge import merge_into_report

        merge_into_report(run_dir, [results])
    if rows_failed:
        raise RowsFailed(failed_rows_message(results, merged=merge))
    return results


def failed_rows_message(results: Path, merged: bool) -> str:
    """One line naming each failed row of a results file (artifact, threads, the error, shortened)."""
    try:
        rows = json.loads(Path(results).read_text()).get("rows", [])
    except (OSError, ValueError, AttributeError):
        rows = []
    failed = [r for r in rows if isinstance(r, dict) and r.get("error")]
    named = "; ".join(f"{r.get('artifact')} threads={r.get('threads')}: {one_line(r['error'], 100)}" for r in failed)
    kept = "merged into the report" if merged else "kept"
    return (f"{results}: {len(failed)} of {len(rows)} rows failed on the board ({named or 'the runner exited 1'}); "
            f"the other rows are {kept}")
