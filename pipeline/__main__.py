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

import sys
from pathlib import Path

from pipeline.cli_parser import DEFAULT_RECIPE, build_parser, parse
from pipeline.errors import PipelineError, printable


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__.split("\n\nThe command line")[0])
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["device"]:  # the remote runner owns its options: forward them whole
        from pipeline.device.__main__ import main as device_main

        return device_main(["remote", *argv[1:]])
    args = parse(parser, argv)
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


# import names of the `host` extra (pyproject.toml): missing on a board-style install
HOST_MODULES = {"optuna", "sqlalchemy", "torch", "torchvision", "timm", "safetensors", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "openvino", "nncf",
                "sklearn", "pydantic", "yaml", "rich", "tqdm", "matplotlib", "psutil", "PIL", "jsonschema"}


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
    run_pipeline(cfg, plan=export_plan(), fresh=args.fresh, command="export")
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
    run_pipeline(cfg, plan=benchmark_plan(with_target), fresh=args.fresh, command="benchmark")
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

    rules, result = import_compiled(args.run_dir, args.compiled)
    print(f"{args.run_dir}: {compiler_line(result, rules.accelerator)}")
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


def cmd_explore(args) -> int:
    from pipeline.report.explore import open_viewer, prepare

    model, node_data = prepare(args.run_dir, args.artifact)
    print(f"{model}: {', '.join(str(p) for p in node_data.values()) or 'no per-node data (no layer error or op time measured)'}")
    try:
        open_viewer(model, list(node_data.values()), port=args.port, browser=not args.no_browser)
    except ModuleNotFoundError as exc:
        raise PipelineError(f"{exc.name} is not installed: pip install -e '.[explore]' (Model Explorer and its ONNX adapter)") from None
    return 0


def cmd_list(args) -> int:
    from pipeline.listing import list_command

    lines = list_command(args.what, args.pattern)
    print("\n".join(lines) if lines else f"no {args.what} match {args.pattern!r}")
    return 0


COMMANDS = {"sweep": cmd_sweep, "list": cmd_list, "run": cmd_run, "check": cmd_check, "export": cmd_export, "benchmark": cmd_benchmark, "show": cmd_show,
            "report": cmd_report, "target": cmd_target, "bundle": cmd_bundle, "explore": cmd_explore}

if __name__ == "__main__":
    sys.exit(main())
