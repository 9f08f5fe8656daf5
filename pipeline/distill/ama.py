"""Activation map adaptation (Wu et al., arXiv 2010.13500, "Activation Map Adaptation for Effective
Knowledge Distillation").

The paper's idea, from its abstract: a trainable *adaptive module* replaces some of the teacher's
layers, so the teacher's intermediate activation maps become ones a small student can follow; the
adapted teacher is shallower, so distillation is also faster. No official code exists; what follows
is this project's reading (shared/METHODS.md), with every choice the abstract leaves open an option.

Adapted teacher. Teacher stages t_1 … t_N; the module A starts after stage k (``after``) and
replaces stages k+1 … k+r (``replaces``). A is ``blocks`` × conv3×3-BN-ReLU, its first conv strided
so that A(F_t^k) has the shape of the student's stage m (``student_stage``, default: the one aligned
from the end with t_{k+r}), width ``width`` (default: that stage's channels). With ``head: teacher``
a training-only bridge (1×1 conv-BN, resize) maps A's output to t_{k+r}'s shape and the teacher's
own remaining layers (a copy, fine-tuned when ``tune_tail``) classify it; with ``head: new`` a fresh
global-pool + linear head replaces everything after stage k.

    adaptation (teacher frozen):  min_{A, bridge, tail}  CE(tail(bridge(A(F_t^k))), y)
    distillation:                 L_method = mean_{b,c,h,w} (r(F_s^m) − A(F_t^k))²

r is a training-only 1×1 conv where the student's channels differ from A's width (identity
otherwise). The trainer adds ``w_ce·CE + w_kd·KD_T(z_s, z_a)``, z_a the *adapted* teacher's logits.

The teacher's forward is cut with ``torch.fx``: the graph is traced with the stage modules as leaves,
A is wired after stage k, and dead-code elimination drops the replaced stages, so the teacher never
computes them (any fx-traceable model works: the zoo, most of torchvision).
"""

from __future__ import annotations

import copy
import operator
import time
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from pipeline.distill.base import DistillLoss
from pipeline.distill.teacher_side import (
    accuracies, cache_key, cached_phase, ordered, reset_parameters, train_phase,
)
from pipeline.errors import PipelineError
from pipeline.models.taps import ModelIO

ADAPTED = "ama"  # the key of A(F_t^k) in the teacher ModelIO


class Resize(nn.Module):
    """Average-pool down or nearest-upsample to a fixed H×W."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)

    def forward(self, x):
        if x.shape[-2:] == self.size:
            return x
        if x.shape[-2] >= self.size[0] and x.shape[-1] >= self.size[1]:
            return F.adaptive_avg_pool2d(x, self.size)
        return F.interpolate(x, size=self.size, mode="nearest")


def adaptive_module(c_in: int, hw_in: tuple[int, int], c_out: int, hw_out: tuple[int, int], blocks: int) -> nn.Sequential:
    """``blocks`` × conv3×3-BN-ReLU: C_in×H_in×W_in → C_out×H_out×W_out, striding when H_in is a multiple of H_out."""
    stride = tuple(i // o if o and i >= o and i % o == 0 else 1 for i, o in zip(hw_in, hw_out))
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride if i == 0 else 1, 1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU()]
    hw = tuple((h - 1) // s + 1 for h, s in zip(hw_in, stride))
    if hw != tuple(hw_out):
        layers.append(Resize(hw_out))
    return nn.Sequential(*layers)


def bridge(c_in: int, c_out: int, hw_out: tuple[int, int]) -> nn.Module:
    """1×1 conv-BN and resize from A's output to the replaced stage's shape; identity when they agree."""
    layers: list[nn.Module] = []
    if c_in != c_out:
        layers += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
    layers.append(Resize(hw_out))
    return nn.Sequential(*layers)


def _index(i: int, n: int, key: str, names) -> int:
    if not -n <= i < n:
        raise PipelineError(f"distill.options.{key}: {i} is out of range for {n} stages ({', '.join(names)})")
    return i % n


class AMALoss(DistillLoss):
    """L_AMA = mean(r(F_s^m) − A(F_t^k))², A the adaptive module trained first so that the
    shallower adapted teacher still classifies; KD uses the adapted teacher's logits.

    Wu et al., arXiv 2010.13500 (our reading: module docstring). Defaults w_ce=0.1, w_kd=0.9 (KD's),
    w_feat=10 (a hint-style MSE; see benchmarks/distill_methods.py for the rows that set it).
    """

    name = "ama"
    zero_when_identical = False  # A is a different network from the student's stage

    def __init__(self, options, student, teacher):
        super().__init__(options, student, teacher)
        n_t, n_s = len(teacher.stage_shapes), len(student.stage_shapes)
        self.k = _index(options.after, n_t, "after", teacher.stage_names)
        self.last = self.k + options.replaces
        if self.last >= n_t:
            raise PipelineError(
                f"distill.options.replaces: {options.replaces} teacher stage(s) after '{teacher.stage_names[self.k]}' "
                f"asked, but only {n_t - 1 - self.k} follow; lower 'replaces' or 'after'")
        m = options.student_stage if options.student_stage is not None else self.last - n_t + n_s
        if options.student_stage is None and m < 0:
            raise PipelineError(f"distill.options.student_stage: no student stage aligns with teacher stage "
                                f"'{teacher.stage_names[self.last]}'; set it")
        self.m = _index(m, n_s, "student_stage", student.stage_names)
        c_s, *hw_s = student.stage_shapes[self.m]
        c_k, *hw_k = teacher.stage_shapes[self.k]
        c_last, *hw_last = teacher.stage_shapes[self.last]
        width = options.width or c_s
        parts = {"module": adaptive_module(c_k, tuple(hw_k), width, tuple(hw_s), options.blocks)}
        if options.head == "teacher":
            parts["bridge"] = bridge(width, c_last, tuple(hw_last))
        else:
            parts["head"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, teacher.num_classes))
        parts["tail"] = nn.ModuleDict()  # copies of the teacher's remaining layers, filled by prepare_teacher
        self.adapted = nn.ModuleDict(parts)
        self.regressor = nn.Conv2d(c_s, width, 1) if c_s != width else nn.Identity()
        self._graph: fx.GraphModule | None = None
        self._frozen = False

    # -- the adapted teacher ------------------------------------------------------------------
    def _build_graph(self, teacher: nn.Module) -> fx.GraphModule:
        """Trace the teacher with its stages as leaves, wire A after stage k, drop what it replaces."""
        names = self.teacher_info.stage_names
        leaves = set(names)

        class StageLeaves(fx.Tracer):
            def is_leaf_module(self, mod, qualname):
                return qualname in leaves or super().is_leaf_module(mod, qualname)

        try:
            graph = StageLeaves().trace(teacher)
        except Exception as exc:  # fx raises many kinds; the user needs one line
            raise PipelineError(f"ama: cannot trace the teacher ({type(teacher).__name__}) with torch.fx: {exc}") from None
        calls = [n for n in graph.nodes if n.op == "call_module" and n.target in (names[self.k], names[self.last])]
        n_k, n_last = (next((n for n in calls if n.target == t), None) for t in (names[self.k], names[self.last]))
        if n_k is None or n_last is None or len(calls) != 2:
            raise PipelineError(f"ama: the teacher's forward does not call stage '{names[self.k]}' or '{names[self.last]}' once each")
        out = next(n for n in graph.nodes if n.op == "output")
        with graph.inserting_after(n_last):
            detached = graph.call_method("detach", (n_k,))  # nothing flows back into the frozen teacher
        with graph.inserting_after(detached):
            a = graph.call_module("ama_module", (detached,))
        with graph.inserting_after(a):
            if self.options.head == "teacher":
                joined = graph.call_module("ama_bridge", (a,))
                n_last.replace_all_uses_with(joined)
                logits = out.args[0]
            else:
                joined = logits = graph.call_module("ama_head", (a,))
        out.args = ((logits, a),)

        root: dict[str, object] = {"ama_module": self.adapted["module"]}
        root["ama_bridge" if self.options.head == "teacher" else "ama_head"] = self.adapted[
            "bridge" if self.options.head == "teacher" else "head"]
        teacher_modules = dict(teacher.named_modules())
        after_join = False
        for node in list(graph.nodes):
            after_join = after_join or node is joined
            if node.op == "get_attr":
                root[node.target] = operator.attrgetter(node.target)(teacher)
            elif node.op == "call_module" and node.target in teacher_modules:
                if after_join and node is not joined and self.options.head == "teacher":  # the remaining layers: a copy
                    key = node.target.replace(".", "__")
                    if key not in self.adapted["tail"]:
                        self.adapted["tail"][key] = _detached_copy(teacher_modules[node.target])
                    node.target = f"ama_tail.{key}"
                    root[node.target] = self.adapted["tail"][key]
                else:
                    root[node.target] = teacher_modules[node.target]
        gm = fx.GraphModule(root, graph, class_name="AdaptedTeacher")
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
        return gm

    def adapted_teacher(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits B×K, A(F_t^k) B×C_s×H_s×W_s) of the adapted teacher."""
        if self._graph is None:
            raise RuntimeError("ama: prepare_teacher must run before the adapted teacher is used")
        return self._graph(x)

    def prepare_teacher(self, teacher, teacher_taps, train_loader, cache_dir):
        """Train A (+ bridge/head, + the tail copy) with CE on the frozen teacher, or load it from the cache."""
        teacher.eval()
        object.__setattr__(self, "_graph", self._build_graph(teacher))  # not a submodule: the loss must not own the teacher
        key = cache_key(self.name, self.options.model_dump(mode="json"), teacher, train_loader,
                        student_stage=self.student_info.stage_shapes[self.m], teacher_stages=self.teacher_info.stage_shapes)
        path = Path(cache_dir) / self.name / f"{key[:20]}.pt"
        metrics = cached_phase(path, self.adapted, lambda: self._adapt(teacher, train_loader))
        for p in self.adapted.parameters():
            p.requires_grad_(False)
        self._frozen = True
        self.adapted.eval()
        return metrics

    def _adapt(self, teacher: nn.Module, train_loader) -> dict:
        fresh = [self.adapted[k] for k in ("module", "bridge", "head") if k in self.adapted]
        for i, m in enumerate(fresh):
            reset_parameters(m, self.options.seed + i)
        tail = self.adapted["tail"]
        tail.requires_grad_(self.options.tune_tail)
        trained = fresh + ([tail] if self.options.tune_tail else [])
        tail.eval()

        def ce(x, y, _position):
            logits = self.adapted_teacher(x)[0]
            return F.cross_entropy(logits, y), logits

        seconds = train_phase(trained, ce, train_loader, self.options.seed, self.options.epochs, self.options.lr, "ama adapt")
        self.adapted.eval()
        seconds_in = {"teacher": 0.0, "adapted": 0.0}

        def both(x):  # interleaved per batch, so load from other processes hits both timings alike
            t0 = time.perf_counter()
            z_t = teacher(x)
            t1 = time.perf_counter()
            z_a = self.adapted_teacher(x)[0]
            seconds_in["teacher"] += t1 - t0
            seconds_in["adapted"] += time.perf_counter() - t1
            return [z_t, z_a]

        data = ordered(train_loader)
        teacher_acc, adapted_acc = accuracies(both, data)
        n = max(len(data), 1)
        return {
            "adapted_train_acc": adapted_acc,
            "teacher_train_acc": teacher_acc,
            "teacher_ms_per_batch": 1000 * seconds_in["teacher"] / n,
            "adapted_ms_per_batch": 1000 * seconds_in["adapted"] / n,
            "adapt_seconds": seconds,
            "adapt_epochs": self.options.epochs,
            "module_params": sum(p.numel() for k in ("module", "bridge", "head") if k in self.adapted
                                 for p in self.adapted[k].parameters()),
        }

    def train(self, mode: bool = True):
        super().train(mode)
        if self._frozen:
            self.adapted.eval()  # adapted once, then fixed: its BN statistics must not drift
        return self

    # -- distillation ---------------------------------------------------------------------------
    def teacher_forward(self, teacher_taps, x):
        logits, a = self.adapted_teacher(x)
        return ModelIO(logits=logits, feats={ADAPTED: a})

    def forward(self, student, teacher, targets):
        return F.mse_loss(self.regressor(student.stages[self.m]), teacher.feats[ADAPTED])


def _detached_copy(module: nn.Module) -> nn.Module:
    """A copy of a teacher module without the teacher's forward hooks (feature taps)."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    return twin
