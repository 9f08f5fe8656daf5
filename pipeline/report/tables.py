"""The report's text as plain data (lines, and tables of headers + rows of strings): one source for Markdown, HTML and the console.

``verdict_lines`` and ``headline`` are the first lines: the verdict, what failed, what was not
measured, then the deploy artifact's facts with where each was measured. ``summary`` follows
Ultralytics' benchmark table (format, status, size, accuracy, latency, speed-up), one row per
artifact × machine × thread setting; ``devices`` sets each device row beside the host's answer on
the same images; ``stages`` is the accuracy chain that shows where accuracy is lost; ``gates``,
``checks`` and ``target`` close the loop. Status words are plain text (PASS, FAIL, NOT MEASURED,
NOT RUN, OK, FAILED): servers without an emoji font render emoji as empty boxes.
"""

from __future__ import annotations

from typing import Any


Table = tuple[list[str], list[list[str]]]
OK, FAILED = "OK", "FAILED"
SPEEDUP_NOTE = ("Speed-up vs teacher: the teacher's p50 over the row's, on the same machine at the same threads; the teacher "
                "timed as its fp32 ONNX export in ONNX Runtime where that row exists, else in PyTorch. Top-1 intervals are "
                "Wilson 95 % intervals on the row's images: differences inside them are not evidence. p50 and p90 ± %: the larger "
                "side of their distribution-free 95 % interval over the value; * where the time cap (benchmark.max_seconds) "
                "ended timing before the target precision (benchmark.precision_pct).")
DEVICE_NOTE = ("Device rows: top-1 on the bundle's test sample (its size is the row's Images), beside the host's top-1 on those "
               "same images and the fraction of images the device answered as the host did; timed on the board by the same "
               "method. Speed-up vs teacher only where the teacher ran on that machine.")


def method(report: dict[str, Any]) -> str:
    """How every number was taken, from the run's settings (the stopping rule as it was set)."""
    s, images = report["settings"], report["data"]["images"]
    if s.get("precision_pct") is not None:
        stop = (f"at least {s['min_runs']} timed calls{_and_seconds(s)}, then until p50 and p90 are both known to "
                f"±{s['precision_pct']:g} % (distribution-free {100 * (s.get('confidence') or 0.95):g} % interval from order "
                f"statistics) or {max(s.get('max_seconds') or 0, s['min_seconds']):g} s have passed, whichever comes first")
    else:
        stop = f"at least {s['min_runs']} timed calls and at least {s['min_seconds']:g} s (both)"
    timed = "" if s.get("timed", "all") == "all" else " Timed: the deploy artifact only (and the teacher where a gate needs it)."
    return (
        "Batch 1, one real preprocessed test image per call, cycled in order. Per artifact and thread setting: "
        "init (load/compile, runtime library already imported) and the first inference are timed apart; then "
        f"{s['warmup']} untimed warm-up calls; then {stop}. Latency (p50/p90/p99, mean) is the wall time of the engine call "
        "alone (LiteRT invoke, OpenVINO infer, ONNX Runtime run, the PyTorch forward) on an input already in the model's "
        "layout and dtype, as benchmark_model and benchmark_app time it; 'end-to-end' is one whole predict call, adding the "
        "layout change, int8 quantise/dequantise and the copy of the logits. Neither includes image decoding/normalisation "
        "or argmax. Percentiles by linear interpolation (numpy). RSS Δ = peak resident memory during init and runs minus "
        f"before init. OpenVINO runs one synchronous request, one stream. Accuracy: top-1 on the first {images} test "
        f"images.{timed}"
    )


def _and_seconds(s: dict[str, Any]) -> str:
    return f" and {s['min_seconds']:g} s" if s.get("min_seconds") else ""


def verdict_lines(report: dict[str, Any]) -> list[str]:
    """The verdict, then each failure, then each thing not measured: what a reader must see first."""
    v = report["verdict"]
    return ([f"Verdict: {v['status']}"] + [f"FAIL: {m}" for m in v["failures"]]
            + [f"NOT MEASURED: {m}" for m in v["not_measured"]])


def run_label(report: dict[str, Any]) -> str:
    """'run edge_tpu (runs/edge_tpu, config 1a2b3c4d5e6f)': how two runs are told apart."""
    run = report["run"]
    where = [run["folder"]] if run.get("folder") else []
    where += [f"config {run['config_hash']}"] if run.get("config_hash") else []
    return f"run {run['name']}" + (f" ({', '.join(where)})" if where else "")


def headline(report: dict[str, Any]) -> Table:
    """The deploy artifact's facts, each with where it was measured."""
    h, host = report["headline"], report["environment"]["host"]
    source = ""
    if h.get("export_source"):
        weights = {"qat": "QAT", "distill": "distilled"}.get(h["export_source"], h["export_source"])
        # the export stage's reason starts with the weights it names ("QAT weights: int8 on 144 validation images …")
        reason = h.get("export_source_reason") or f"{weights} weights"
        source = f"; exported from {'' if reason.startswith('the ') else 'the '}{reason}"
    rows = [["Deploy artifact", f"{h['artifact']}" + (f" ({h['file']})" if h.get("file") else "")
             + (f", {_mb(h.get('size_bytes'))} MB" if h.get("size_bytes") is not None else "") + source]]
    if h.get("top1") is not None:
        rows.append(["Top-1", f"{_pct(h['top1'])} % {_ci(h.get('top1_ci95'))} on {h.get('top1_images')} test images (host)"])
    if h.get("val_top1") is not None:
        rows.append(["Top-1 (validation)", f"{_pct(h['val_top1'])} % on {h.get('val_images')} validation images (host): "
                                           "what models are ranked by"])
    if h.get("device"):
        top = f"{_pct(h['device_top1'])} % {_ci(h.get('device_top1_ci95'))}" if h.get("device_top1") is not None else "no accuracy"
        host_same = f"; host {_pct(h['device_host_top1'])} % on the same images" if h.get("device_host_top1") is not None else ""
        agree = f"; agreement with the host {_pct(h['device_agreement'])} %" if h.get("device_agreement") is not None else ""
        rows.append([f"Top-1 on {h['device']}", f"{h['device_artifact']}: {top} on {h.get('device_images')} images{host_same}{agree}"])
    if h.get("p50_ms") is None:
        rows.append(["p50 latency", "not measured (the deploy artifact failed or was not timed)"])
    elif h["latency_where"] == "device":
        rows.append(["p50 latency", f"{h['p50_ms']:.3f} ms{_pm(h.get('p50_half_width_pct'))} on {h['latency_machine']} "
                                    f"(target device), threads={_t(h['latency_threads'])}"])
    else:
        rows.append(["p50 latency", f"{h['p50_ms']:.3f} ms{_pm(h.get('p50_half_width_pct'))} on the host CPU, not the target "
                                    f"({host.get('cpu')}, threads={_t(h['latency_threads'])})"])
    if h.get("accelerator"):
        rows.append([h["accelerator"], "measured on the device" if h["accelerator_measured"] else "NOT MEASURED (no device result)"])
    rows.append(["Vendor compiler", h["compiler"]])
    if h.get("op_mapping"):
        rows.append(["Op mapping", h["op_mapping"]])
    if report["gates"]:
        rows.append(["Gates", " · ".join(f"{g['name']} {g['status']}" for g in report["gates"])])
    counts = {}
    for c in report["checks"]:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    if counts:
        rows.append(["Checks", ", ".join(f"{n} {s}" for s, n in counts.items())])
    return ["", "Measured"], rows


def summary(report: dict[str, Any]) -> Table:
    headers = ["Model", "Format", "Machine", "Threads", "Status", "Size (MB)", "Top-1 (%) [95 % CI]", "Images", "p50 (ms)",
               "p90 (ms)", "Speed-up vs teacher"]
    rows = []
    for r in report["latency"]:
        lat = r.get("latency_ms") or {}
        ok = not r.get("error")
        rows.append([
            r["model"],
            r["artifact"] + (" (deploy)" if r.get("deploy") else ""),
            _machine(r),
            _threads(r),
            OK if ok else f"{FAILED}: {r['error']}",
            _mb(r.get("size_bytes")),
            _pct(r.get("accuracy")) + (f" {_ci(r.get('accuracy_ci95'))}" if r.get("accuracy_ci95") else ""),
            _int(r.get("images")),
            _ms(lat.get("p50")) + _pm_of(r, "p50") if ok else "",
            _ms(lat.get("p90")) + _pm_of(r, "p90") if ok else "",
            _x(r.get("speedup_vs_teacher")),
        ])
    return headers, rows


def devices(report: dict[str, Any]) -> Table:
    """Each device row beside the host's answer on the same sample."""
    headers = ["Device", "Model", "Format", "Threads", "Status", "Images", "Top-1 on device (%) [95 % CI]",
               "Host top-1, same images (%)", "Agreement with host (%)", "p50 (ms)", "p90 (ms)", "Speed-up vs teacher"]
    rows = []
    for r in report["latency"]:
        if r["where"] != "device":
            continue
        lat = r.get("latency_ms") or {}
        ok = not r.get("error")
        rows.append([
            r["device"], r["model"], r["artifact"] + (" (deploy)" if r.get("deploy") else ""), _threads(r),
            OK if ok else f"{FAILED}: {r['error']}", _int(r.get("images")),
            _pct(r.get("accuracy")) + (f" {_ci(r.get('accuracy_ci95'))}" if r.get("accuracy_ci95") else ""),
            _pct(r.get("host_accuracy")) + (f" ({r['host_reference']})" if r.get("host_reference") else ""),
            _pct(r.get("agreement_with_host")),
            _ms(lat.get("p50")) + _pm_of(r, "p50") if ok else "", _ms(lat.get("p90")) + _pm_of(r, "p90") if ok else "",
            _x(r.get("speedup_vs_teacher")) or ("n/a: no teacher on this device" if ok else ""),
        ])
    return headers, rows


def latency_details(report: dict[str, Any]) -> Table:
    headers = ["Model", "Format", "Machine", "Threads", "Engine", "Init (ms)", "First (ms)", "Mean (ms)", "Std (ms)",
               "p99 (ms)", "p50 end-to-end (ms)", "Runs", "RSS Δ (MB)", "Params", "MMACs"]
    rows = []
    for r in report["latency"]:
        if r.get("error"):
            continue
        lat = r.get("latency_ms") or {}
        rows.append([
            r["model"], r["artifact"], _machine(r), _threads(r), str(r.get("engine") or r.get("format") or ""),
            _ms(r.get("init_ms"), 1), _ms(r.get("first_ms")), _ms(lat.get("mean")), _ms(lat.get("std")), _ms(lat.get("p99")),
            _ms((r.get("e2e_latency_ms") or {}).get("p50")), str(r.get("runs") or ""), _num(r.get("rss_delta_mb"), 1),
            _int(r.get("params")), _num(_div(r.get("macs"), 1e6), 2),
        ])
    return headers, rows


def stages(report: dict[str, Any]) -> Table:
    headers = ["Stage", "Top-1 (%) [95 % CI]", "Made from", "Lost vs made-from (pts)", "Lost vs teacher (pts)", "Agree teacher (%)",
               "Agree fp32 student (%)", "Agree fake-quant (%)", "Engine"]
    rows = []
    for r in report["accuracy"]:
        a = r.get("agreement") or {}
        rows.append([
            r["label"],
            f"{_pct(r['top1'])} {_ci(r.get('top1_ci95'))}".strip() if r.get("error") is None else f"{FAILED}: {r['error']}",
            r.get("parent") or "",
            _signed(r.get("drop_vs_parent_pts")),
            _signed(r.get("drop_vs_teacher_pts")),
            _pct(a.get("teacher")),
            _pct(a.get("student_fp32")),
            _pct(a.get("student_fakequant")),
            str(r.get("engine") or ""),
        ])
    return headers, rows


def gates(report: dict[str, Any]) -> Table:
    headers = ["Gate", "Compares", "Limit", "Value", "Status", "Measured on", "Message"]
    from pipeline.config import Gates

    compares = {name: field.description for name, field in Gates.model_fields.items()}
    rows = [[g["name"], compares.get(g["name"], ""), f"{g['limit']:g}", _num(g.get("value"), 3), g["status"],
             _where(g), g["message"]] for g in report["gates"]]
    return headers, rows


def checks(report: dict[str, Any]) -> Table:
    headers = ["Check", "Subject", "Status", "Counts toward the verdict", "Message"]
    rows = [[c["kind"], c["subject"], c["status"], "yes" if c["deploy"] else "no", c["message"]] for c in report["checks"]]
    return headers, rows


def target(report: dict[str, Any]) -> Table:
    t = report.get("target") or {}
    rows = [[k, _short(v)] for k, v in t.items() if k not in ("compiler", "details") and v is not None]
    if c := t.get("compiler"):
        rows += [[f"compiler.{k}", _short(v)] for k, v in c.items() if v is not None]
    rows += [[k, _short(v)] for k, v in (t.get("details") or {}).items()]
    return ["Key", "Value"], rows


def environment(report: dict[str, Any]) -> Table:
    env = report["environment"]
    headers = ["Machine", "Where", "CPU", "Cores (usable)", "Memory (MB)", "OS", "Runtimes"]
    rows = []
    for where, m in [("host", env["host"])] + [("device", d) for d in env.get("devices", [])]:
        versions = {**(m.get("runtimes") or {}), **(m.get("tools") or {})}
        rows.append([
            str(m.get("name")), where, str(m.get("cpu")), f"{m.get('cores')} ({m.get('usable_cores')})",
            str(m.get("memory_mb")), str(m.get("os")), ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        ])
    return headers, rows


def _where(g: dict) -> str:
    if g.get("where") == "device":
        return f"{g.get('device')} (device)"
    return "host CPU, not the target" if g.get("where") == "host" else ""


def _machine(r: dict) -> str:
    return r["device"] if r["where"] == "host" else f"{r['device']} (device)"


def _threads(r: dict) -> str:
    t, used = r.get("threads"), r.get("threads_used")
    if t == 0:
        return f"all ({used})" if used else "all"
    return str(t)


def _t(threads: int | None) -> str:
    return "all" if threads == 0 else str(threads)


def _pm(width_pct) -> str:
    """' ±2.1 %': a 95 % relative half-width after a number; empty when unknown."""
    return "" if width_pct is None else f" ±{width_pct:.1f} %"


def _pm_of(r: dict, stat: str) -> str:
    """The half-width of a row's p50 or p90, marked '*' where the time cap ended timing before it reached the target."""
    prec = r.get("latency_precision")
    if not prec:
        return ""
    width, target = prec.get(f"{stat}_half_width_pct"), prec.get("target_pct")
    short = prec.get("reached") is False and (width is None or (target is not None and width > target))
    return (" ±n/a" if width is None else _pm(width)) + ("*" if short else "")


def _ci(ci) -> str:
    return "" if not ci else f"[{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]"


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _ms(x, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _num(x, digits: int = 2) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _int(x) -> str:
    return "" if x is None else f"{x:,}"


def _mb(x) -> str:
    return "" if x is None else f"{x / 1e6:.3f}"


def _x(x) -> str:
    return "" if x is None else f"{x:.2f}×"


def _signed(x) -> str:
    return "" if x is None else f"{x:+.2f}"


def _div(x, d):
    return None if x is None else x / d


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 200 else s[:197] + "…"
