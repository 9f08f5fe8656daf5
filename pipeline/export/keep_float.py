"""``export.keep_float``: the layers an int8 artifact leaves in float, on every path whose target runs float ops.

One key for every runtime, applied through each library's own mechanism (NNCF ``ignored_scope``, ONNX Runtime
``quantize_static(nodes_to_exclude=…)``, TensorFlow's Quantization Debugger ``denylisted_nodes``):

* a list of patterns: regular expressions searched in each path's node names, as its per-layer report
  (``layer_error.json``) names them; what each pattern matched is recorded, and a pattern that matches nothing in
  that artifact is recorded too (it may name a node of another runtime's graph);
* ``auto``: when plain int8 keeps < 99 % of fp32's top-1 on the validation split, the fewest layers that bring it
  to ≥ 99 % there (``choose_float_layers``): each candidate layer alone first (the fewest is one, when one does it),
  then the most helpful ones added one at a time; then, the last added first, each layer is dropped again if the
  set keeps the rule without it (a layer that helped alone may add nothing beside the ones added after it). A set that never reaches the rule is not shipped, nor one whose
  paired 95 % interval against plain int8 does not lie above 0: all-int8 stays, and the record says what was tried.

A full-integer target (Edge TPU) refuses the key when the recipe is read (``TargetRules.integer_only``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np

from pipeline.decision import accuracy, decision, supported_clause, unsupported, untried
from pipeline.export.fidelity import keeps_int8_rule

KEEP_FLOAT = "keep_float"  # its record's name in the int8 sidecar's quantization and the stage metrics
MAX_CANDIDATES = 12  # layers tried one by one in auto (each try is one quantisation and one validation pass)


def matched(patterns: Iterable[str], names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the names any pattern finds, in the given order; the patterns that find none)."""
    patterns, names = list(patterns), list(dict.fromkeys(names))
    compiled = [re.compile(p) for p in patterns]
    hits = [n for n in names if any(c.search(n) for c in compiled)]
    unmatched = [p for p, c in zip(patterns, compiled) if not any(c.search(n) for n in names)]
    return hits, unmatched


def pattern_record(patterns: list[str], names: Iterable[str], mechanism: str) -> dict:
    """The record of a pattern list applied to one artifact's nodes."""
    kept, unmatched = matched(patterns, names)
    record = {"mode": "patterns", "patterns": list(patterns), "mechanism": mechanism, "kept": kept}
    if unmatched:
        record["unmatched"] = unmatched
    record["reason"] = (f"{len(kept)} layer(s) kept in float by export.keep_float"
                        + (f"; {len(unmatched)} pattern(s) match no node of this model" if unmatched else ""))
    return record


def sqnr_lost(sqnr: dict[str, float | None], inputs_of: Callable[[str], Iterable[str]], steps: int = 64) -> dict[str, float | None]:
    """Each measured tensor's SQNR lost where it was computed: the lowest SQNR (dB) of the nearest measured tensors
    upstream of it minus its own. A quantised tensor's error against fp32 includes everything its inputs brought (it
    accumulates through the graph), so the lowest SQNR names the deepest layers; the loss names the layer whose
    quantisation did the damage (an outlier channel crushed by one layer: 31 dB in, 11 dB out). ``inputs_of(name)``:
    the names the node writing ``name`` reads (through unmeasured ones the walk goes on, for ``steps`` hops); None
    where the tensor or everything upstream of it is unmeasured."""
    lost: dict[str, float | None] = {}
    for name, db in sqnr.items():
        upstream, seen, frontier = [], {name}, list(inputs_of(name))
        for _ in range(steps):
            follow = []
            for u in frontier:
                if u in seen:
                    continue
                seen.add(u)
                if u in sqnr:  # measured: the walk stops here
                    if sqnr[u] is not None:
                        upstream.append(sqnr[u])
                else:
                    follow.extend(inputs_of(u))
            if not follow:
                break
            frontier = follow
        lost[name] = None if db is None or not upstream else min(upstream) - db
    return lost


def most_lost_first(lost: dict[str, float | None]) -> list[str]:
    """The measured tensors by SQNR lost, most first; unmeasured last, in the given order."""
    return sorted(lost, key=lambda t: (lost[t] is None, -(lost[t] or 0.0)))


def choose_float_layers(rank: Callable[[], list[tuple[str, float | None]]], score: Callable[[list[str]], np.ndarray],
                        fp32_acc: float, plain_hits, mechanism: str, split: str = "validation") -> dict:
    """``auto``: the fewest of the candidates ``rank()`` returns ((name, SQNR lost in dB or None), worst first; called only when
    plain int8 misses the rule, since ranking costs a per-layer comparison; at most ``MAX_CANDIDATES`` are tried, and
    recorded as ``candidates``) whose float copy brings
    int8 to ≥ 99 % of ``fp32_acc``; ``score(kept)`` quantises with ``kept`` in float and returns per-image correctness
    on the split ``plain_hits`` (plain int8's) was measured on. The set found is adopted only when its paired interval
    against plain int8 lies above 0 (``pipeline/decision.py``): a set that wins by an image or two is not shipped.

    Returns the record: ``kept`` is empty when plain int8 already keeps the rule or no set was adopted.
    """
    plain_hits = np.asarray(plain_hits, bool)
    plain_acc = accuracy(plain_hits)
    record = {"mode": "auto", "mechanism": mechanism, "validation_images": int(plain_hits.size), "fp32_val_accuracy": fp32_acc,
              "plain_val_accuracy": plain_acc, "kept": [], "tried": [], "decision": untried(plain_hits.size, split)}
    keeps, said = keeps_int8_rule(plain_acc, fp32_acc, "plain int8")
    if keeps:
        return {**record, "reason": f"{said}: nothing kept in float"}
    ranked_layers = rank()
    record["candidates"] = [{"name": n, "sqnr_lost_db": db} for n, db in ranked_layers[:MAX_CANDIDATES]]
    candidates = [n for n, _ in ranked_layers]
    hits: dict[tuple, np.ndarray] = {}

    def attempt(kept: list[str]) -> float:
        hits[tuple(kept)] = np.asarray(score(kept), bool)
        record["tried"].append({"kept": list(kept), "val_accuracy": accuracy(hits[tuple(kept)])})
        return record["tried"][-1]["val_accuracy"]

    alone = {name: attempt([name]) for name in candidates[:MAX_CANDIDATES]}
    ranked = sorted(alone, key=lambda n: -alone[n])  # most helpful first; ties keep the worst-first order
    kept: list[str] = []
    for name in ranked:
        kept.append(name)
        acc = alone[name] if len(kept) == 1 else attempt(kept)
        if keeps_int8_rule(acc, fp32_acc)[0]:
            found = len(kept)
            for name in reversed(kept[:-1] if found > 1 else []):  # each layer the set may not need, last added first
                fewer = [k for k in kept if k != name]
                fewer_acc = alone[fewer[0]] if len(fewer) == 1 else attempt(fewer)
                if keeps_int8_rule(fewer_acc, fp32_acc)[0]:
                    kept, acc = fewer, fewer_acc
            _, now = keeps_int8_rule(acc, fp32_acc, f"with {len(kept)} layer(s) in float, int8")
            if len(kept) < found:
                now += f" ({found - len(kept)} of the {found} added were not needed)"
            return _adopted(record, list(kept), acc, decision(hits[tuple(kept)], plain_hits, split), f"{said}; {now}")
    best = max(record["tried"], key=lambda t: t["val_accuracy"], default=None)
    return {**record, "best_tried": best,
            "reason": f"{said}; no set of the {len(ranked)} candidate layers in float reached 99 %: all-int8 kept"}


def _adopted(record: dict, kept: list[str], acc: float, judged: dict, said: str) -> dict:
    """The record once a set reached the rule: shipped when the interval supports it over plain int8."""
    if judged["supported"]:
        return {**record, "kept": kept, "val_accuracy": acc, "decision": judged, "reason": f"{said}; {supported_clause(judged)}"}
    best = next(t for t in record["tried"] if t["kept"] == kept)  # the same entry: a path that rewrites tries sees it once
    return {**record, "best_tried": best, "decision": judged,
            "reason": f"{said}; {unsupported(judged, 'all-int8')}"}
