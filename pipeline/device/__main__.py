"""``python -m pipeline.device run|info|remote``: the on-device runner's command line (the images' ENTRYPOINT).

``run`` and ``info`` import numpy and a runtime only (a board has no torch); ``remote`` runs on
the host and builds the bundle there. A user mistake or a refused bundle prints one line
and exits 2; ``run`` exits 1 when the results were written but an artifact failed to run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.errors import OneLineParser, PipelineError, printable


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m pipeline.device", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="verify a bundle and benchmark every artifact in it on this machine")
    p.add_argument("bundle", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="results JSON to write")
    p.add_argument("--threads", type=_int_list, help="thread counts, e.g. 1,0 (default: the host benchmark's; 0 = all cores)")
    p.add_argument("--runs", type=int, help="minimum timed runs (default: the host benchmark's)")
    p.add_argument("--warmup", type=int, help="untimed calls after the first (default: the host benchmark's, 10)")
    p.add_argument("--min-seconds", type=float, help="keep timing until at least this long (default: the host's)")
    p.add_argument("--precision-pct", type=float,
                   help="stop once p50 and p90 are known to ± this %% (95 %% confidence); 0 = off, the fixed rule (default: the host's)")
    p.add_argument("--max-seconds", type=float, help="cap on each timed phase (default: the host's)")
    p.add_argument("--name", help="label of this device in reports (default: the hostname)")
    p.add_argument("--only", help="comma-separated artifact keys to run (default: all)")
    p.add_argument("--delegate", help="delegate library for a compiled model (default: the one its target names in the bundle)")
    p.add_argument("--op-time", action="store_true",
                   help="also profile each int8 artifact per op (OpenVINO, ONNX Runtime; LiteRT says why not): the report's "
                        "'where accuracy and time go' then shows this board's figures")
    p.add_argument("--delegate-device", help="which accelerator the delegate opens, e.g. usb, pci, usb:0 (default: the first found)")

    sub.add_parser("info", help="print what the results would record about this device")

    p = sub.add_parser("remote", help="bundle a run, run it on a board over ssh (docker), fetch and merge results")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--ssh", required=True, metavar="USER@HOST")
    p.add_argument("--target", required=True)
    p.add_argument("--image", help="docker image on the board (default: the target's image from docker/)")
    p.add_argument("--no-docker", action="store_true", help="run the runner installed on the board (python3 -m pipeline.device)")
    p.add_argument("--name", help="device label (default: the host part of --ssh)")
    p.add_argument("--port", type=int)
    p.add_argument("-i", "--identity", help="ssh private key")
    p.add_argument("--remote-dir", default="/tmp/edge-pipeline")
    p.add_argument("--threads", help="thread counts for the board, e.g. 1,0 (default: the host benchmark's)")
    p.add_argument("--runs", type=int)
    p.add_argument("--op-time", action="store_true", help="the runner's --op-time: per-op time of each int8 artifact")
    p.add_argument("--docker-arg", action="append", default=[], help="extra docker run argument (repeat)")
    p.add_argument("--ssh-option", action="append", default=[], help="extra ssh -o option (repeat)")
    p.add_argument("--no-merge", action="store_true", help="fetch results without merging them into the report")

    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PipelineError as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 1,0; got {text!r}") from None


def cmd_run(args) -> int:
    from pipeline.artifacts import atomic_write_json
    from pipeline.device.runner import run_bundle

    from pipeline.fs import not_an_input

    not_an_input(args.output, [args.bundle])
    only = [k for k in (args.only or "").split(",") if k]
    results = run_bundle(
        args.bundle,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        min_seconds=args.min_seconds,
        precision_pct=args.precision_pct,
        max_seconds=args.max_seconds,
        name=args.name,
        only=only or None,
        delegate_library=args.delegate,
        delegate_device=args.delegate_device,
        op_time=args.op_time,
    )
    atomic_write_json(args.output, results)
    failed = sum(1 for row in results["rows"] if row["error"])
    print(f"results: {args.output} ({len(results['rows'])} rows, {failed} failed)")
    return 1 if failed else 0


def cmd_info(args) -> int:
    from pipeline.machine import describe_device

    print(json.dumps(describe_device(), indent=2))
    return 0


def cmd_remote(args) -> int:
    from pipeline.device.remote import RemoteSpec, default_image, run_remote

    image = None if args.no_docker else (args.image or default_image(args.target))
    if image is None and not args.no_docker:
        raise PipelineError(f"--target {args.target}: no default image; pass --image IMAGE or --no-docker")
    spec = RemoteSpec(
        ssh=args.ssh,
        target=args.target,
        image=image,
        name=args.name or args.ssh.rpartition("@")[2],
        remote_dir=args.remote_dir,
        port=args.port,
        identity=args.identity,
        threads=args.threads,
        runs=args.runs,
        op_time=args.op_time,
        docker_args=tuple(args.docker_arg),
        ssh_options=tuple(args.ssh_option),
    )
    results = run_remote(args.run_dir, spec, merge=not args.no_merge)
    print(f"results: {results}")
    return 0


COMMANDS = {"run": cmd_run, "info": cmd_info, "remote": cmd_remote}

if __name__ == "__main__":
    sys.exit(main())
