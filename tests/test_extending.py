"""README "Extending", checked: each extension is written here the way a user would write it, into the files
the README names and no others, and then used by the pipeline as if it had always been there.

A distillation method is its loss module plus one line in ``METHODS``; a runtime is its module plus one line in
``RUNTIMES``. (An export format: ``tests/test_formats.py``; a target with a vendor compiler:
``tests/test_target_plugin.py``.)
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
import pipeline.distill as distill_package
from pipeline.config import load_config
from pipeline.distill.methods import METHODS, Method
from pipeline.models.taps import ModelIO
from pipeline.run import run_pipeline

LOGIT_MSE = '''
"""Logit matching (Ba & Caruana 2014): L_method = mean squared difference of the logits."""
import torch.nn.functional as F

from pipeline.distill.base import DistillLoss


class LogitMSELoss(DistillLoss):
    name = "logit_mse"
    needs_features = False

    def forward(self, student, teacher, targets):
        return F.mse_loss(student.logits, teacher.logits)
'''

NUMPY_LINEAR = '''
"""A linear classifier stored as .linear.npz (weight K×D, bias K): the smallest engine a runtime can wrap."""
import numpy as np

from pipeline.runtimes.base import Runtime


class NumpyLinearRuntime(Runtime):
    name = "numpy_linear"

    def __init__(self, artifact, threads=0, sidecar=None):
        super().__init__(artifact, threads, sidecar)
        with np.load(artifact) as f:
            self.weight, self.bias, shape = f["weight"], f["bias"], f["input_shape"]
        self.input_shape = (None, *map(int, shape))  # N×C×H×W, any batch
        self.max_batch = None

    def _run(self, batch):
        return batch.reshape(len(batch), -1) @ self.weight.T + self.bias
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write ``name.py`` with ``source`` into a folder on sys.path, as a user's own package would be."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        return tmp_path / f"{name}.py"

    return write


def test_a_distillation_method_is_its_loss_module_and_one_line_in_methods(tiny_recipe, user_module, monkeypatch):
    files = {user_module("logit_mse", LOGIT_MSE)}
    monkeypatch.setitem(METHODS, "logit_mse", Method("logit_mse:LogitMSELoss", {"w_ce": 0.5, "w_kd": 0.0, "w_feat": 1.0}))
    files.add("pipeline/distill/methods.py")  # the one line above
    assert len(files) == 2
    loss = distill_package._loss_classes()["logit_mse"]  # the name -> class table as a new process builds it
    monkeypatch.setitem(distill_package.LOSSES, "logit_mse", loss)  # this process built (and imported) it already

    assert loss.defaults == {"w_ce": 0.5, "w_kd": 0.0, "w_feat": 1.0}  # taken from its METHODS line
    s, t = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10)
    value = loss(loss.Options(), None, None)(ModelIO(s, {}), ModelIO(t, {}), torch.zeros(4, dtype=torch.long))
    assert value.item() == pytest.approx(((s - t) ** 2).mean().item(), rel=1e-6)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0

    cfg = load_config(tiny_recipe, {"distill.method": "logit_mse"})  # the config accepts the name
    manifests = run_pipeline(cfg, until="distill")
    metrics = manifests["distill"].metrics
    assert metrics["method"] == "logit_mse"
    assert 0.0 <= metrics["test_acc"] <= 1.0


def test_a_runtime_is_its_module_and_one_line_in_runtimes(tmp_path, user_module, monkeypatch):
    from pipeline import runtimes
    from pipeline.benchmark.latency import StopRule, measure_latency

    files = {user_module("numpy_linear_rt", NUMPY_LINEAR)}
    entry = runtimes.RuntimeEntry("numpy_linear", "numpy_linear_rt", "NumpyLinearRuntime", ("numpy",))
    monkeypatch.setitem(runtimes.RUNTIMES, ".npz", entry)
    monkeypatch.setitem(runtimes.BY_NAME, "numpy_linear", entry)
    files.add("pipeline/runtimes/__init__.py")  # the one line above
    assert len(files) == 2

    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(10, 64)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    np.savez(tmp_path / "model.npz", weight=weight, bias=bias, input_shape=np.array([1, 8, 8]))
    runtime = runtimes.load(tmp_path / "model.npz")
    x = rng.normal(size=(3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(runtime.predict(x), x.reshape(3, -1) @ weight.T + bias, rtol=1e-6)
    assert runtimes.engine_name(runtime).startswith("numpy_linear ")  # the report's engine column: name and version

    timing = measure_latency(lambda: runtime, x, warmup=1, rule=StopRule(min_runs=5, precision_pct=None))
    assert timing["timed"] == "invoke" and timing["runs"] >= 5 and timing["latency_ms"]["p50"] > 0
