"""Fold a vendor compile made on another machine into a run's target stage.

``python -m pipeline target RUN --compiled DIR``. A vendor compiler may exist only for some hosts
(the Edge TPU's: x86-64 Linux only), so users compile elsewhere and bring back its output folder.
The target's compiler checks that folder against the run's deploy artifact before anything is
written (``VendorCompiler.check_import``). Then, under the run's lock, the files are copied into
``06_target/`` under fixed names (the user's path decides only what is read) and the stage's
manifest is rewritten with the parsed compile in the same metrics an in-run compile records
(``pipeline.target.stage``), so the report and the device bundle pick it up. The target stage's
outputs change, so the next ``python -m pipeline run`` re-runs benchmark and report; re-running the
target stage itself drops the import.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import Manifest, atomic_write_bytes, hash_outputs
from pipeline.errors import PipelineError
from pipeline.stages import stage_folder
from pipeline.target.rules import CompileResult, TargetRules


def import_compiled(run_dir: Path, folder: Path) -> tuple[TargetRules, CompileResult]:
    """Check ``folder``'s compile against ``run_dir``'s deploy artifact, copy it into the target stage, record it.
    Returns the run's target rules and the compiler result written into the manifest's ``compiler_result``."""
    from pipeline.lock import run_lock

    run_dir, folder = Path(run_dir), Path(folder).expanduser()
    if not run_dir.is_dir():
        raise PipelineError(f"{run_dir}: no such run folder (runs/<name>)")
    target_dir = stage_folder(run_dir, "target")
    with run_lock(run_dir):  # no run rewrites the stage meanwhile
        manifest = Manifest.read(target_dir)
        if manifest is None:
            raise PipelineError(f"{target_dir}: no finished target stage; run it first (python -m pipeline run <recipe> --until target)")
        rules = _run_rules(run_dir)
        files, result = rules.compiler.check_import(folder, _deploy_model(run_dir, rules))
        for name, src in files.items():
            dst = target_dir / name  # a fixed name: nothing the user gives decides where we write
            if not (dst.exists() and dst.resolve() == src.resolve()):
                atomic_write_bytes(dst, src.read_bytes())
        metrics = dict(manifest.metrics)
        metrics.update(compiler=result.status, compiled=True, compiler_result=result.as_dict(),
                       compiler_source=f"imported from {folder.resolve()} (python -m pipeline target --compiled)")
        if "ops_mapped" in metrics:
            metrics["compiler_agrees"] = result.ops_mapped == metrics["ops_mapped"]
        manifest.metrics, manifest.outputs = metrics, hash_outputs(target_dir)
        manifest.write(target_dir)  # last: until it is written the stage reads as before the import
    return rules, result


def _run_rules(run_dir: Path):
    """The run's target rules (from config.json, else the benchmark results); only a target whose compiler's output
    can be imported."""
    from pipeline.run_folder import built_for, recorded_config
    from pipeline.target import TARGETS, target_rules

    config = recorded_config(run_dir) or {}
    name = (config.get("target") or {}).get("name") or built_for(run_dir)
    if name is None:
        raise PipelineError(f"{run_dir}: no config.json or benchmark results naming its target; re-run it with python -m pipeline run")
    rules = target_rules(name)
    if rules.compiler is None or rules.compiler.check_import is None:
        able = sorted(n for n, r in TARGETS.items() if r.compiler is not None and r.compiler.check_import is not None)
        raise PipelineError(f"{run_dir}: its target {name} has no vendor compiler whose output --compiled imports "
                            f"(targets with one: {', '.join(able) or 'none'})")
    return rules


def _deploy_model(run_dir: Path, rules) -> Path:
    from pipeline.target.stage import deploy_artifact

    return deploy_artifact(stage_folder(run_dir, "export"), rules)
