"""Closing the loop: the run fails (exit 3, after its report is written) when the deployed student misses a gate.

Every gate reads the target's deploy artifact (``TargetRules.deploy_artifact``, e.g. ``tflite_int8``
for the Edge TPU) and its name says what it compares (``pipeline.config.Gates`` lists them):

* ``max_drop_vs_teacher``: top-1 points lost against the fp32 teacher;
* ``max_drop_vs_distilled_fp32``: points lost against the distilled fp32 student (QAT and
  conversion together, end to end);
* ``max_conversion_drop``: points lost against the fp32 PyTorch model of the very weights that
  were exported (the QAT weights, or the distilled ones): the conversion alone (ONNX, TFLite or
  OpenVINO, int8 calibration);
* ``max_p90_latency_ms`` and ``min_speedup_vs_teacher`` (teacher p50 / deploy p50 on one machine
  at one thread setting, the teacher timed as its ONNX export where it has that row).

Device first. Where device rows of the target's bundle were merged (``target_devices``), the
gates read the deploy artifact's rows there: any failed device deploy row fails every gate;
latency comes from the device rows (at the target's thread count if measured, else the most
threads); accuracy is the host's full-split number corrected by the device's shortfall against the
host on the same sample (``host_accuracy − accuracy`` of the device row), so a board that answers
differently moves the gate. Without device rows, latency gates read the host rows at ``threads``
and say "host CPU, not the target"; for a target with an accelerator (Edge TPU, NPU) a host
CPU latency says nothing about it, so those gates are NOT MEASURED (they do not fail the run;
the report says so at the top).

With ``benchmark.timed: deploy`` only the deploy artifact (and the teacher's baseline when
``min_speedup_vs_teacher`` is set) is timed; a latency gate whose row was not timed is NOT MEASURED,
with that reason, not failed (``timed``).

Runs of ``python -m pipeline export`` (a given model, nothing trained) and ``python -m pipeline
benchmark`` (given artifacts) have no teacher and no distilled student: the gates that compare with
them are NOT MEASURED there, with the reason (``NOT_APPLICABLE``), and never fail the run.

Each gate gives ``{name, limit, value, status, passed, where, device, message}``: ``status`` is
PASS / FAIL / NOT MEASURED, ``passed`` true / false / null. A gate whose numbers are missing on
the machine it reads (the artifact failed there) fails and says why.
"""

from __future__ import annotations

from typing import Any

from pipeline.benchmark.latency import resolve_threads

TEACHER_BASELINES = ("onnx", "pytorch")  # the teacher row speed-ups divide by, first one present
PASS, FAIL, NOT_MEASURED = "PASS", "FAIL", "NOT MEASURED"
PASSED = {PASS: True, FAIL: False, NOT_MEASURED: None}
# accuracy gate -> (accuracy stage it compares with, how the message names it); None = the export source
ACCURACY_GATES = {
    "max_drop_vs_teacher": ("teacher_fp32", "teacher fp32"),
    "max_drop_vs_distilled_fp32": ("student_fp32", "distilled fp32 student"),
    "max_conversion_drop": (None, "fp32 of the same weights"),
}
LATENCY_GATES = ("max_p90_latency_ms", "min_speedup_vs_teacher")
_NO_TEACHER = "no teacher in this run (python -m pipeline {0} trains none)"
_NOT_DISTILLED = "nothing was distilled (python -m pipeline {0}); max_conversion_drop compares with the given fp32 model"
# command (RunInfo.command) -> gate -> why it cannot be measured in such a run
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    command: {"max_drop_vs_teacher": _NO_TEACHER.format(command), "min_speedup_vs_teacher": _NO_TEACHER.format(command),
              "max_drop_vs_distilled_fp32": _NOT_DISTILLED.format(command)}
    for command in ("export", "benchmark")
}


def teacher_baseline(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Among the rows of one machine at one thread setting, the teacher row speed-ups divide by."""
    measured = {r["artifact"]: r for r in rows if r["model"] == "teacher" and not r.get("error") and r.get("latency_ms")}
    return next((measured[a] for a in TEACHER_BASELINES if a in measured), None)


def gate_threads(measured: list[int], target_threads: int) -> int | None:
    """The thread setting (as asked) whose host rows the gates read: the target's, else the most cores measured."""
    if not measured:
        return None
    want = resolve_threads(target_threads)
    for t in measured:
        if resolve_threads(t) == want:
            return t
    return max(measured, key=lambda t: (resolve_threads(t), t == 0))


def device_threads(rows: list[dict[str, Any]], target_threads: int) -> int | None:
    """The thread setting of one device's rows the gates read: the target's as asked, else the most threads used."""
    settings = {r["threads"]: r.get("threads_used") or r["threads"] for r in rows}
    if not settings:
        return None
    if target_threads in settings:
        return target_threads
    return max(settings, key=lambda t: (settings[t], t == 0))


def export_source_stage(accuracy: list[dict[str, Any]]) -> str:
    """The accuracy stage of the fp32 weights that were exported: QAT's when that row exists, else the distilled
    (or given) PyTorch student; the ONNX model where there is no PyTorch student row at all (a given .onnx)."""
    if any(r["stage"] == "student_qat_fp32" and r.get("top1") is not None for r in accuracy):
        return "student_qat_fp32"
    return "student_fp32" if any(r["stage"] == "student_fp32" for r in accuracy) else "onnx"


def evaluate_gates(
    gates: dict[str, float | None],
    *,
    accuracy: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    deploy_artifact: str,
    threads: int | None,
    target_devices: tuple[str, ...] | list[str] = (),
    target_threads: int = 0,
    accelerator: str | None = None,
    command: str = "run",
    timed: str = "all",
) -> list[dict[str, Any]]:
    """One result per gate that has a limit; ``accuracy``/``latency`` are report rows.

    ``threads``: the host thread setting read (``gate_threads``); ``target_devices``: names of
    the devices whose rows came from this target's bundle; ``accelerator``: the target's (None
    for a CPU target); ``command``: the run's (``NOT_APPLICABLE``); ``timed``: ``benchmark.timed``.
    """
    ctx = _Readings(accuracy, latency, deploy_artifact, threads, tuple(target_devices), target_threads, accelerator, timed)
    given = {r.get("artifact") for r in [*accuracy, *latency]}
    absent = (f"the deploy artifact {deploy_artifact} is not among the files given to python -m pipeline benchmark"
              if command == "benchmark" and deploy_artifact not in given else None)
    results = []
    for name, limit in gates.items():
        if limit is None:
            continue
        if why := NOT_APPLICABLE.get(command, {}).get(name) or absent or _reference_not_given(name, ctx, accuracy, command):
            status, value, where, device, what = NOT_MEASURED, None, None, None, why
        elif name in ACCURACY_GATES:
            status, value, where, device, what = ctx.accuracy_gate(name, float(limit))
        elif name in LATENCY_GATES:
            status, value, where, device, what = ctx.latency_gate(name, float(limit))
        else:
            raise ValueError(f"unknown gate {name!r}")
        bound = f"limit ≥ {limit:g}×" if name == "min_speedup_vs_teacher" else f"limit {limit:g} {'ms' if name.endswith('_ms') else 'pts'}"
        results.append({
            "name": name,
            "limit": float(limit),
            "value": value,
            "status": status,
            "passed": PASSED[status],
            "where": where,
            "device": device,
            "message": f"{name} {status}: {what} ({bound})",
        })
    return results


def _reference_not_given(name: str, ctx: "_Readings", accuracy: list[dict[str, Any]], command: str) -> str | None:
    """`benchmark X_int8.tflite` alone: the fp32 model an accuracy gate compares with was not given, so the gate
    cannot be measured (not a failure of the given file)."""
    if command != "benchmark" or name not in ACCURACY_GATES:
        return None
    ref = ACCURACY_GATES[name][0] or ctx.source
    if any(r.get("stage") == ref for r in accuracy):
        return None
    return f"its reference ({ref}) is not among the files given to python -m pipeline benchmark"


def gate_failed(gate: dict[str, Any]) -> bool:
    """Failed, as opposed to passed or not measured (``passed`` is null then)."""
    return gate.get("passed") is False


class _Readings:
    """The numbers the gates read, chosen once: device deploy rows first, else the host's."""

    def __init__(self, accuracy, latency, deploy, threads, devices, target_threads, accelerator, timed="all"):
        self.deploy, self.threads, self.accelerator, self.timed = deploy, threads, accelerator, timed
        self.top1 = {r["stage"]: r["top1"] for r in accuracy if r.get("top1") is not None}
        self.source = export_source_stage(accuracy)
        host = [r for r in latency if r.get("where") == "host" and r.get("threads") == threads]
        measured = [r for r in host if not r.get("error") and r.get("latency_ms")]
        self.host_deploy = next((r for r in measured if r["model"] == "student" and r["artifact"] == deploy), None)
        self.host_teacher = teacher_baseline(measured)
        self.host_rows = {(r["model"], r["artifact"] if r["model"] == "student" else "teacher") for r in host}
        on_target = [r for r in latency if r.get("where") == "device" and r.get("device") in devices]
        deploy_rows = [r for r in on_target if r["model"] == "student" and r.get("deploy")]
        self.device_failures = [r for r in deploy_rows if r.get("error")]
        self.device_rows = []  # per device: (deploy row, its teacher baseline or None) at that device's gate threads
        for name in dict.fromkeys(r["device"] for r in deploy_rows):
            ok = [r for r in deploy_rows if r["device"] == name and not r.get("error") and r.get("latency_ms")]
            t = device_threads(ok, target_threads)
            row = next((r for r in ok if r["threads"] == t), None)
            if row is not None:
                same = [r for r in on_target if r["device"] == name and r["threads"] == t]
                self.device_rows.append((row, teacher_baseline(same)))

    def _device_failure(self) -> str:
        r = self.device_failures[0]
        return f"{r['artifact']} FAILED on the device {r['device']} (threads={_t(r['threads'])}): {r['error']}"

    def accuracy_gate(self, name: str, limit: float):
        stage, ref_label = ACCURACY_GATES[name]
        stage = stage or self.source
        ref, d = self.top1.get(stage), self.top1.get(self.deploy)
        if self.device_failures:
            return FAIL, None, "device", self.device_failures[0]["device"], self._device_failure()
        if d is None or ref is None:
            return FAIL, None, "host", None, _missing(d is None and self.deploy, ref is None and stage, kind="accuracy")
        host_drop = _round((ref - d) * 100)
        what = f"{self.deploy} top-1 {_pct(d)} vs {ref_label} ({stage}) {_pct(ref)}: drop {_num(host_drop)} pts"
        worst = None
        for row, _ in self.device_rows:
            if row.get("accuracy") is None or row.get("host_accuracy") is None:
                continue
            shortfall = (row["host_accuracy"] - row["accuracy"]) * 100
            value = _round(host_drop + shortfall)
            if worst is None or value > worst[0]:
                worst = (value, row, shortfall)
        if worst is None:
            return _verdict(host_drop <= limit), host_drop, "host", None, what + " on the host's test split"
        value, row, shortfall = worst
        what = (f"{what} on the host's test split, {shortfall:+.2f} pts on {row['device']} ({row['artifact']} "
                f"{_pct(row['accuracy'])} vs host {_pct(row['host_accuracy'])} on the same {row.get('images')} images): "
                f"drop {_num(value)} pts")
        return _verdict(value <= limit), value, "device", row["device"], what

    def latency_gate(self, name: str, limit: float):
        if self.device_failures:
            return FAIL, None, "device", self.device_failures[0]["device"], self._device_failure()
        if self.device_rows:
            worst = None
            for row, teacher in self.device_rows:
                value = _latency_value(name, row, teacher)
                if value is None:
                    continue
                worse = worst is None or (value < worst[0] if name == "min_speedup_vs_teacher" else value > worst[0])
                if worse:
                    worst = (value, row, teacher)
            if worst is None:
                row = self.device_rows[0][0]
                return NOT_MEASURED, None, "device", row["device"], f"no teacher row on the device {row['device']} to divide by"
            value, row, teacher = worst
            return (_verdict(_passes(name, value, limit)), value, "device", row["device"],
                    _latency_what(name, value, row, teacher, f"on the device {row['device']} at threads={_t(row['threads'])}"))
        if untimed := self._untimed(name):
            return NOT_MEASURED, None, None, None, untimed
        missing = _missing(self.host_deploy is None and self.deploy,
                           name == "min_speedup_vs_teacher" and self.host_teacher is None and "teacher", kind="latency")
        if missing and not self.accelerator:
            return FAIL, None, "host", None, missing
        value = _latency_value(name, self.host_deploy, self.host_teacher) if not missing else None
        where = f"at threads={_t(self.threads)} on the host CPU, not the target"
        if self.accelerator:
            shown = f"{_latency_what(name, value, self.host_deploy, self.host_teacher, where)}; " if value is not None else ""
            return (NOT_MEASURED, None, None, None,
                    f"no {self.accelerator} result merged ({shown}a host CPU latency says nothing about the {self.accelerator})")
        return _verdict(_passes(name, value, limit)), value, "host", None, _latency_what(name, value, self.host_deploy, self.host_teacher, where)


    def _untimed(self, name: str) -> str | None:
        """Why a row this latency gate reads was never timed on the host (``benchmark.timed``), else None."""
        if self.timed == "all":
            return None
        needed = [("student", self.deploy)] + ([("teacher", "teacher")] if name == "min_speedup_vs_teacher" else [])
        absent = [artifact for model, artifact in needed if (model, artifact) not in self.host_rows]
        if not absent:
            return None
        return (f"{', '.join(absent)} not timed at threads={_t(self.threads)} (benchmark.timed: {self.timed} times the "
                "deploy artifact, and the teacher only when min_speedup_vs_teacher is set)")


def _latency_value(name: str, row: dict, teacher: dict | None) -> float | None:
    if name == "max_p90_latency_ms":
        return _round(row["latency_ms"]["p90"])
    return _round(teacher["latency_ms"]["p50"] / row["latency_ms"]["p50"]) if teacher else None


def _latency_what(name: str, value: float, row: dict, teacher: dict | None, where: str) -> str:
    if name == "max_p90_latency_ms":
        return f"{row['artifact']} p90 {_num(value, 3)} ms {where}"
    return f"teacher ({teacher['artifact']}) p50 / {row['artifact']} p50 = {_num(value)}× {where}"


def _passes(name: str, value: float, limit: float) -> bool:
    return value >= limit if name == "min_speedup_vs_teacher" else value <= limit


def _verdict(ok: bool) -> str:
    return PASS if ok else FAIL


def _missing(*names, kind: str) -> str | None:
    names = [n for n in names if n]
    return f"no {kind} for {', '.join(names)} (failed or not measured; see the report)" if names else None


def _round(x: float | None) -> float | None:
    """6 decimals, before comparing: 97% − 92% is 5.000000000000004 points in floats, and must pass a 5-point limit."""
    return None if x is None else round(float(x), 6)


def _t(threads: int | None) -> str:
    return "all" if threads == 0 else str(threads)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
