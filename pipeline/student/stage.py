"""Student stage, for ``python -m pipeline export MODEL``: the user's model is the student; nothing is trained.

A checkpoint in any form ``models/weights.py`` accepts is rebuilt for the data (``student.arch``
where the file does not name it) and saved as a pipeline checkpoint ``student.pt`` carrying the
data's preprocessing, exactly what the distill stage would have written. An ``.onnx`` file is
copied with its batch fixed to 1 as ``student.onnx`` and run on the test split (which checks its
input shape and class count); the export stage converts from it. The folder takes the distill
stage's place (``03_student``, read by later stages as ``distill``), so export, target, benchmark
and report run unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, one_line
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import StudentMetrics
from pipeline.stages import STUDENT_CHECKPOINT as CHECKPOINT
from pipeline.stages import STUDENT_ONNX as ONNX

SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors", ".onnx")  # what `export MODEL` takes


def run(ctx: StageContext) -> StudentMetrics:
    from pipeline.artifacts import sha256_file
    from pipeline.models import count_parameters
    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.models.weights import model_from_checkpoint
    from pipeline.train.data import training_data
    from pipeline.train.loop import evaluate

    cfg = ctx.cfg.student
    if not cfg.checkpoint:
        raise PipelineError("student.checkpoint: not set (python -m pipeline export MODEL sets it to MODEL)")
    path = Path(cfg.checkpoint).expanduser()
    if path.suffix.lower() == ".onnx":
        from pipeline.data import load_split, read_split_info

        static_batch(path, ctx.out / ONNX)
        x, y = load_split(ctx.input("data"), "test")
        accuracy = onnx_test_accuracy(ctx.out / ONNX, x, y, num_classes=read_split_info(ctx.input("data"))["num_classes"])
        return StudentMetrics(format="onnx", test_acc=accuracy, source_checkpoint={"file": str(path), "sha256": sha256_file(path)})
    data = training_data(ctx.input("data"), ctx.cfg.data)
    c = data.input_shape[0]
    model, source = model_from_checkpoint(cfg, section="student", num_classes=data.num_classes, in_channels=c)
    accuracy = evaluate(model, data.test)
    save_checkpoint(ctx.out / CHECKPOINT, model,
                    {"arch": source["arch"], "arch_args": source["arch_args"], "num_classes": data.num_classes, "in_channels": c,
                     "source_checkpoint": source, "metrics": {"test_acc": accuracy}, **data.checkpoint_meta()})
    return StudentMetrics(format=source["format"], test_acc=accuracy, arch=source["arch"], params=count_parameters(model),
                          source_checkpoint=source)


def static_batch(src: Path, dst: Path) -> None:
    """Copy an ONNX model with its batch dimension fixed to 1: the int8 converters and the Edge TPU want
    static shapes (the pipeline's own exports are batch 1 too)."""
    import onnx

    from pipeline.model_files import check_onnx

    model = check_onnx(src, f"student.checkpoint: {src}")  # one image input, static C/H/W, external data beside it
    onnx.load_external_data_for_model(model, str(Path(src).absolute().parent))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    onnx.save(model, str(dst))


def onnx_test_accuracy(path: Path, x: np.ndarray, y: np.ndarray, *, num_classes: int) -> float:
    """Top-1 of the ONNX model on the test split; a model that does not take the data's images or does not
    answer with its class count is one line naming the key to set."""
    from pipeline.benchmark.accuracy import predict_classes
    from pipeline.runtimes import load

    try:
        with load(path) as rt:
            logits = rt.predict(x[:1])
            if logits.ndim != 2 or logits.shape[1] != num_classes:
                raise PipelineError(f"student.checkpoint: {path.name}: answers with {tuple(logits.shape[1:])} logits per image, "
                                    f"the data has {num_classes} classes")
            pred = predict_classes(rt, x)
    except PipelineError:
        raise
    except Exception as exc:
        raise PipelineError(f"student.checkpoint: {path.name}: {one_line(exc, 200)}; set data.image_size/data.channels "
                            "to what the model takes") from None
    return float((pred == y).mean())
