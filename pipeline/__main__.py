"""Distil, quantise, export and benchmark image classifiers for edge NPUs (Edge TPU, Raspberry Pi, OpenVINO).

start with:
  python -m pipeline run edge_tpu.yaml          train a teacher, distil a student, export and benchmark it
  python -m pipeline export MODEL.pt [RECIPE]   export and benchmark a model you already have
  python -m pipeline benchmark MODEL.tflite     measure exported files on a recipe's test data
  python -m pipeline sweep SWEEP.yaml           which student to ship: many candidates distilled and measured
  python -m pipeline list targets|methods|formats|models [PATTERN]   what the recipes can name

The command line parses, then calls the package. A user mistake prints one line and exits 2; a failed benchmark gate exits 3 after the report
is written; Ctrl-C leaves finished stages in place (the stage that was running is re-run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.errors import OneLineParser, PipelineError, printable
from pipeline.report.compare import MAX_ACCURACY_DROP, MAX_LATENCY_INCREASE


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m pipeline", description=__doc__.split("\n\nThe command line")[0],
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

    p = sub.add_parser("target", help="fold an Edge TPU compile made on another machine into a run's target stage")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--compiled", type=Path, required=True, metavar="DIR",
                   help="edgetpu_compiler's -o folder: <model>_edgetpu.tflite, <model>_edgetpu.log "
                        "(and its stdout as edgetpu_compiler.log, if saved)")

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

    p = sub.add_parser("list", help="list the targets, distillation methods, export formats or models a recipe can name")
    p.add_argument("what", choices=["targets", "methods", "formats", "models"])
    p.add_argument("pattern", nargs="?", help="an fnmatch pattern, e.g. '*mobilenet*' (models: timm:… and torchvision:… too)")

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["device"]:  # the remote runner owns its options: forward them whole
        from pipeline.device.__main__ import main as device_main

        return device_main(["remote", *argv[1:]])
    args, extra = parser.parse_known_args(argv)
    if extra:  # `export MODEL --arch A RECIPE`: a positional after an option (argparse stops at the first option)
        if args.command == "benchmark" and not any(e.startswith("-") for e in extra):
            args.files += extra
        elif args.command == "export" and len(extra) == 1 and not extra[0].startswith("-") and args.recipe == DEFAULT_RECIPE:
            args.recipe = extra[0]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return COMMANDS[args.command](args)
    except PipelineError as exc:
        if not getattr(exc, "silent", False):  # a torchrun rank whose rank 0 has printed the line already
            print(f"error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in HOST_MODULES:
            raise
        print(f"error: {exc.name} is not installed; `python -m pipeline {args.command}` needs the host toolchain: "
              "pip install 'edge-pipeline[host]' (a board needs only [device]: python -m pipeline.device)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; the next run resumes from the interrupted stage", file=sys.stderr)
        return 130


DEFAULT_RECIPE = "edge_tpu.yaml"  # export/benchmark without a recipe: the default target's (targets/)

# import names of the `host` extra (pyproject.toml): missing on a board-style install
HOST_MODULES = {"optuna", "sqlalchemy", "torch", "torchvision", "timm", "safetensors", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "openvino", "nncf",
                "sklearn", "pydantic", "yaml", "rich", "tqdm", "matplotlib", "psutil", "PIL", "jsonschema"}


def _limit(text: str) -> float:
    """A regression limit: a finite number ≥ 0 (nan would compare false and pass every regression)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number ≥ 0")
    return value


def _overrides(pairs: list[str]) -> dict:
    import yaml

    from pipeline.config import recipe_yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set {pair}: expected KEY=VALUE, e.g. distill.epochs=5")
        try:
            out[key] = recipe_yaml(value)  # a recipe's rules: safe tags only, no duplicate keys, aliases bounded
        except RecursionError:
            raise PipelineError(f"--set {key}: the value is nested too deeply; give a number, a string or a short list") from None
        except yaml.YAMLError as exc:  # bad syntax, or a tag such as !!python/object that safe_load refuses
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise PipelineError(f"--set {key}: the value is not plain YAML data ({problem}); "
                                "give a number, a string, [a, list] or {a: mapping}") from None
    return out


def cmd_run(args) -> int:
    from pipeline.config import load_config
    from pipeline.run import run_pipeline
    from pipeline.run_folder import choose_run_dir

    from pipeline.train.distributed import torchrun_env

    overrides = _overrides(args.overrides)
    if args.name is not None:
        overrides["name"] = args.name
    # under torchrun every rank chooses alike: a folder holding this config, or the first free NAME-k
    cfg, note = choose_run_dir(load_config(args.recipe, overrides), overwrite=args.overwrite)
    if note and torchrun_env()[0] == 0:
        print(note, file=sys.stderr)
    run_pipeline(cfg, start=args.start, until=args.until, fresh=args.fresh)
    if torchrun_env()[0] == 0:  # under torchrun, the other ranks have nothing more to say
        print(f"run folder: {cfg.run_dir}")
    return 0


def cmd_check(args) -> int:
    from pipeline.config import load_config
    from pipeline.export.untrained import precheck

    precheck(load_config(args.recipe, _overrides(args.overrides)), force=True)
    return 0


def cmd_export(args) -> int:
    """The model as the student of the recipe's export → target → benchmark → report, in a run folder of its own.

    The recipe's student section describes the student it would train, not this model: it is replaced
    by one holding only the model file, ``--arch`` and any ``--set student.…``."""
    from pipeline.config import load_config
    from pipeline.run import export_plan, run_pipeline
    from pipeline.run_folder import choose_run_dir
    from pipeline.student.stage import SUFFIXES

    model = Path(args.model).expanduser()
    if not model.is_file():
        raise PipelineError(f"{args.model}: no such file (a checkpoint or an .onnx file)")
    if model.suffix.lower() not in SUFFIXES:
        raise PipelineError(f"{args.model}: not a model file this command reads (known: {', '.join(SUFFIXES)}); "
                            "an exported .tflite or OpenVINO .xml goes to python -m pipeline benchmark")
    overrides = _overrides(args.overrides)
    student = {k.removeprefix("student."): overrides.pop(k) for k in [k for k in overrides if k.startswith("student.")]}
    student["checkpoint"] = str(model.resolve())
    if args.arch:
        student["arch"] = args.arch
    overrides["student"] = student
    cfg = _own_folder(load_config(args.recipe, overrides), overrides, f"export-{model.stem}")
    cfg, note = choose_run_dir(cfg)
    if note:
        print(note, file=sys.stderr)
    run_pipeline(cfg, plan=export_plan(), fresh=args.fresh)
    print(f"run folder: {cfg.run_dir}")
    return 0


def cmd_benchmark(args) -> int:
    """The given artifacts measured on the recipe's test data: data → artifacts → (target) → benchmark → report."""
    from pipeline.benchmark.given import formats_of
    from pipeline.config import load_config
    from pipeline.run import benchmark_plan, run_pipeline
    from pipeline.run_folder import choose_run_dir
    from pipeline.target import TARGETS

    files = list(args.files)
    recipe = files.pop() if files[-1].endswith((".yaml", ".yml")) else DEFAULT_RECIPE
    if not files:
        raise PipelineError("benchmark: no artifacts given (python -m pipeline benchmark MODEL.tflite [MODEL.onnx …] [RECIPE.yaml])")
    formats = formats_of(files)
    overrides = _overrides(args.overrides)
    overrides["benchmark.artifacts"] = [str(Path(f).expanduser().resolve()) for f in files]
    cfg, note = choose_run_dir(_own_folder(load_config(recipe, overrides), overrides, f"benchmark-{Path(files[0]).stem}"))
    if note:
        print(note, file=sys.stderr)
    with_target = TARGETS[cfg.target.name].deploy_artifact in formats  # the target checks its deploy artifact only
    run_pipeline(cfg, plan=benchmark_plan(with_target), fresh=args.fresh)
    print(f"run folder: {cfg.run_dir}")
    return 0


def _own_folder(cfg, overrides: dict, suffix: str):
    """``cfg`` named ``<recipe name>-<suffix>`` unless --set name=… was given: never the training run's folder."""
    return cfg if "name" in overrides else cfg.model_copy(update={"name": f"{cfg.name}-{suffix}"})


def cmd_show(args) -> int:
    import json

    import yaml

    from pipeline.artifacts import Manifest

    path = Path(args.what)
    if path.is_dir():
        for folder in sorted(p for p in path.iterdir() if p.is_dir() and p.name[:2].isdigit()):
            m = Manifest.read(folder)
            state = "partial (interrupted)" if folder.name.endswith(".partial") else ("done" if m else "no manifest")
            print(f"{folder.name}: {state}" + (f" in {m.seconds:.1f}s" if m else ""))
            if m:
                shown = {k: v for k, v in m.metrics.items() if isinstance(v, (int, float, str, bool))}
                print("  " + json.dumps(shown))
        return 0
    from pipeline.config import load_config

    print(yaml.safe_dump(load_config(args.what).model_dump(mode="json"), sort_keys=False))
    return 0


def cmd_report(args) -> int:
    from pipeline.report.cli import report_command

    return report_command(args.run_dir, baseline=args.baseline, device_results=args.device_results,
                          fail_on_regression=args.fail_on_regression, max_accuracy_drop=args.max_accuracy_drop,
                          max_latency_increase=args.max_latency_increase)


def cmd_target(args) -> int:
    from pipeline.stages import stage_folder
    from pipeline.target.compiled import import_compiled
    from pipeline.target.stage import compiler_line

    result = import_compiled(args.run_dir, args.compiled)
    print(f"{args.run_dir}: {compiler_line(result)}")
    print(f"recorded in {stage_folder(args.run_dir, 'target')}; re-write the report: python -m pipeline report {args.run_dir}")
    return 0


def cmd_bundle(args) -> int:
    from pipeline.device.bundle import make_bundle

    make_bundle(args.run_dir, args.target, args.output)
    return 0


def cmd_sweep(args) -> int:
    from pipeline.sweep import run_sweep

    return run_sweep(args.sweep_file, workers=args.workers, storage=args.storage, device=args.device, target=args.target,
                     docker=not args.no_docker, worker=args.worker)


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from pipeline.listing import versions

        print(versions())
        parser.exit(0)


def cmd_list(args) -> int:
    from pipeline.listing import list_command

    lines = list_command(args.what, args.pattern)
    print("\n".join(lines) if lines else f"no {args.what} match {args.pattern!r}")
    return 0


COMMANDS = {"sweep": cmd_sweep, "list": cmd_list, "run": cmd_run, "check": cmd_check, "export": cmd_export, "benchmark": cmd_benchmark, "show": cmd_show,
            "report": cmd_report, "target": cmd_target, "bundle": cmd_bundle}

if __name__ == "__main__":
    sys.exit(main())
