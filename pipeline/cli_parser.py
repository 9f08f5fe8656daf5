"""The command line's options: every command of ``python -m pipeline`` and what it takes (``pipeline.__main__`` runs them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import OneLineParser
from pipeline.report.compare import MAX_ACCURACY_DROP, MAX_LATENCY_INCREASE

DEFAULT_RECIPE = "edge_tpu.yaml"  # export/benchmark without a recipe: the default target's (targets/)


def build_parser(description: str) -> OneLineParser:
    """Every command's options; the commands that make or measure a run first, then those that read one."""
    parser = OneLineParser(prog="python -m pipeline", description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the package's and its toolchain's versions")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the pipeline, reusing every finished stage whose inputs are unchanged")
    p.add_argument("recipe", help="a YAML file, or the name of a recipe in targets/ (e.g. edge_tpu.yaml)")
    p.add_argument("--from", dest="start", metavar="STAGE", help="re-run from this stage on")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    p.add_argument("--fresh", action="store_true", help="ignore every cached stage")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set distill.epochs=5 (VALUE is YAML)")
    p.add_argument("--name", help="the run's name and folder (runs/NAME); default: the recipe's name")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run of another config in the folder (else this run goes to NAME-2, NAME-3…)")

    p = sub.add_parser("check", help="export the untrained student and check it against the target's rules")
    p.add_argument("recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("export", help="export, check and benchmark a model you already have as the student (no teacher, no training)")
    p.add_argument("model", type=Path, help="a checkpoint (the pipeline's, a state_dict, a training script's dict, .safetensors) "
                                            "or an .onnx file")
    p.add_argument("recipe", nargs="?", default=DEFAULT_RECIPE,
                   help=f"data, export formats, target and gates (default: {DEFAULT_RECIPE}); its teacher/student/distill/qat are not used")
    p.add_argument("--arch", help="the architecture of a state_dict, e.g. torchvision:mobilenet_v2 (sets student.arch)")
    p.add_argument("--fresh", action="store_true", help="ignore every cached stage")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("benchmark", help="measure .onnx/.tflite/OpenVINO .xml files on a recipe's test data, with the run's table and report")
    p.add_argument("files", nargs="+", metavar="ARTIFACT… [RECIPE.yaml]",
                   help=f"artifacts to measure, then optionally a recipe for the data, target and gates (default: {DEFAULT_RECIPE})")
    p.add_argument("--fresh", action="store_true", help="ignore every cached stage")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    _add_reading_commands(sub)
    return parser


def _add_reading_commands(sub) -> None:
    """The commands that read a run folder (or a recipe) or the package: show, report, target, sweep, device, bundle, list."""
    p = sub.add_parser("show", help="print the validated config, or a run's stages and metrics")
    p.add_argument("what", help="a recipe, or a run folder (runs/<name>)")

    p = sub.add_parser("report", help="(re)write a run's report; compare with a baseline run; merge device results")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--baseline", type=Path, help="another run folder to compare with (writes RUN/compare_<baseline>.md and .json)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 3 when the deploy artifact regressed against --baseline (see the two limits)")
    p.add_argument("--max-accuracy-drop", type=_limit, default=MAX_ACCURACY_DROP, metavar="PTS",
                   help=f"top-1 points the deploy artifact may lose against the baseline (default {MAX_ACCURACY_DROP:g})")
    p.add_argument("--max-latency-increase", type=_limit, default=MAX_LATENCY_INCREASE, metavar="PCT",
                   help=f"percent its p50 may grow against the baseline (default {MAX_LATENCY_INCREASE:g})")
    p.add_argument("--device-results", type=Path, nargs="+", default=[], help="results.json files from on-device runs")

    p = sub.add_parser("target", help="fold a vendor compile made on another machine into a run's target stage")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--compiled", type=Path, required=True, metavar="DIR",
                   help="the vendor compiler's output folder: the compiled model and its logs (README: python -m pipeline target)")

    p = sub.add_parser("sweep", help="search for the student to ship: many candidates, each distilled, exported and measured (Optuna)")
    p.add_argument("sweep_file", type=Path, help="a sweep file: base recipe, search space, objectives, constraints, budget")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine, sharing the cores (default 1)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage shared by every worker: postgresql+psycopg2://user@host/db, "
                                                    "mysql://…, journal:PATH (default: sqlite in sweeps/NAME/study.db)")
    p.add_argument("--device", metavar="USER@HOST", help="measure each trial's deploy artifact on this board over ssh")
    p.add_argument("--target", help="the board's target (e.g. rpi4); replaces the base recipe's target.name")
    p.add_argument("--no-docker", action="store_true", help="with --device: run the runner installed on the board, not its docker image")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a process started by --workers N

    sub.add_parser("device", add_help=False,
                   help="bundle a run, benchmark it on a board over ssh, merge the results (python -m pipeline.device remote)")

    p = sub.add_parser("bundle", help="pack a run's artifacts and a test sample for an on-device benchmark")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--target", required=True)
    p.add_argument("-o", "--output", type=Path, required=True)

    p = sub.add_parser("explore", help="open an int8 model in Model Explorer, coloured by each node's int8 error (SQNR) and time")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--artifact", metavar="KEY", help="tflite_int8, openvino_int8 or onnx_int8 (default: the first one exported)")
    p.add_argument("--port", type=int, default=8080, help="the viewer's port on localhost (default 8080)")
    p.add_argument("--no-browser", action="store_true", help="start the viewer without opening a browser tab (print its address)")

    p = sub.add_parser("list", help="list the targets, distillation methods, export formats or models a recipe can name")
    p.add_argument("what", choices=["targets", "methods", "formats", "models"])
    p.add_argument("pattern", nargs="?", help="an fnmatch pattern, e.g. '*mobilenet*' (models: timm:… and torchvision:… too)")


def parse(parser: OneLineParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed, taking a positional given after an option where argparse stops at the first option."""
    args, extra = parser.parse_known_args(argv)
    if extra:  # `export MODEL --arch A RECIPE`: a positional after an option (argparse stops at the first option)
        if args.command == "benchmark" and not any(e.startswith("-") for e in extra):
            args.files += extra
        elif args.command == "export" and len(extra) == 1 and not extra[0].startswith("-") and args.recipe == DEFAULT_RECIPE:
            args.recipe = extra[0]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _limit(text: str) -> float:
    """A regression limit: a finite number ≥ 0 (nan would compare false and pass every regression)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number ≥ 0")
    return value


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from pipeline.listing import versions

        print(versions())
        parser.exit(0)
