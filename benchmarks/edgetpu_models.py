"""Edge TPU reality check: what the static checker says of popular edge classifiers, beside what
Coral's op table and users of the real compiler say of them.

Each model is built untrained (mapping depends on the graph, not the weights), exported through the
pipeline's own path (PyTorch → ONNX → onnx2tf full-integer int8, uint8 I/O, per-channel, as the
``edge_tpu`` target deploys it; ``pipeline.target.check.export_untrained``) at a small input, and
judged by ``pipeline/target/edge_tpu_check.py``. ``EXPECTED`` is the independent answer: Coral's
supported-operations table (coral.ai/docs/edgetpu/models-intro) for the ops the file contains, and
user reports from the real compiler (google-coral/edgetpu#272 and #353: HARD_SWISH stays on the
CPU, hence the ``*_minimal`` variants; LOGISTIC is mapped). The script fails (exit 1) when the
checker disagrees with it. No Edge TPU compiler runs here (it is not installable on this host).

    python benchmarks/edgetpu_models.py                 # all six models, 96×96
    python benchmarks/edgetpu_models.py --size 64 --models timm:mobilenetv3_small_100
    python benchmarks/edgetpu_models.py --table
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from pipeline.artifacts import atomic_write_json  # noqa: E402

RESULTS = ROOT / "results" / "edgetpu_models.json"
# model -> (fully mapped expected?, why: Coral's table and user reports)
EXPECTED: dict[str, tuple[bool, str]] = {
    "timm:mobilenetv3_small_100": (False, "HARD_SWISH is not in Coral's table; the compiler leaves it on the CPU (edgetpu#272, #353)"),
    "timm:tf_mobilenetv3_small_minimal_100": (True, "ReLU, no squeeze-excite: the variant Coral recommends in edgetpu#353"),
    "timm:tf_efficientnet_lite0": (True, "ReLU6, no squeeze-excite; Coral ships EfficientNet-Lite Edge TPU models"),
    "torchvision:mobilenet_v2": (True, "Conv/DepthwiseConv/ReLU6/Add/Mean: all in the table; Coral ships MobileNet V2"),
    "torchvision:mobilenet_v3_small": (False, "HARD_SWISH, as timm's MobileNetV3 (edgetpu#272, #353)"),
    "torchvision:efficientnet_b0": (True, "SiLU = LOGISTIC × MUL, both in the table (LOGISTIC maps, edgetpu#272); SE = Mean + 1×1 conv"),
}
NUM_CLASSES = 10


def check(arch: str, size: int) -> dict:
    from pipeline.models import build_model, count_parameters
    from pipeline.target import TARGETS
    from pipeline.target.check import export_untrained

    rules = TARGETS["edge_tpu"]
    model = build_model(arch, NUM_CLASSES, 3).eval()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgetpu-models-") as tmp:
        artifact = export_untrained(model, (3, size, size), rules, Path(tmp))
        report = rules.checker(artifact, rules)
    first = report["first_unmapped"]
    cpu_ops = sorted({op for op, c in report["op_counts"].items() if c["cpu"] and op != "QUANTIZE"})
    fully_expected, why = EXPECTED.get(arch, (None, ""))
    return {
        "arch": arch,
        "input": [3, size, size],
        "params": count_parameters(model),
        "verdict": report["verdict"],
        "ops_total": report["ops_total"],
        "ops_mapped": report["ops_mapped"],
        "first_unmapped": f"#{first['index']} {first['op']}" if first else None,
        "unmapped_kinds": sorted({r["op"] for r in report["ops"] if not r["supported"]}),
        "cpu_op_kinds": cpu_ops,
        "parameter_mib_on_edgetpu": round(report["parameter_bytes_on_edgetpu"] / 2**20, 2),
        "suggestion": rules.friendly_alternative(arch) if report["verdict"] != "fully mapped" else None,
        "expected_fully_mapped": fully_expected,
        "expected_why": why,
        "agrees": fully_expected is None or (report["verdict"] == "fully mapped") == fully_expected,
        "summary": report["summary"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def table(data: dict) -> str:
    rows = ["| model | input | ops on TPU | verdict | first unmapped (kinds) | suggestion | Coral table / user reports | agrees |",
            "|---|---|---|---|---|---|---|---|"]
    for r in data.get("models", {}).values():
        unmapped = f"{r['first_unmapped']} ({', '.join(r['unmapped_kinds'])})" if r["first_unmapped"] else "—"
        expected = ("fully mapped" if r["expected_fully_mapped"] else "not fully mapped") + f": {r['expected_why']}"
        rows.append(f"| `{r['arch']}` | {'×'.join(map(str, r['input'][1:]))} | {r['ops_mapped']}/{r['ops_total']} | {r['verdict']} "
                    f"| {unmapped} | {('`' + r['suggestion'] + '`') if r['suggestion'] else '—'} | {expected} "
                    f"| {'yes' if r['agrees'] else '**NO**'} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(EXPECTED))
    ap.add_argument("--size", type=int, default=96, help="square input side (mapping does not depend on it beyond shapes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--table", action="store_true", help="print the stored results and exit")
    args = ap.parse_args()
    if not args.table:
        import torch

        torch.set_num_threads(args.threads)
        data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        data.update(source="coral.ai/docs/edgetpu/models-intro; google-coral/edgetpu#272, #353", checker="edgetpu_static",
                    compiler="not run (edgetpu_compiler is not installable on this host)")
        for arch in args.models:
            row = check(arch, args.size)
            print(f"{arch}: {row['summary']} ({row['seconds']}s)", flush=True)
            data.setdefault("models", {})[arch] = row
            atomic_write_json(RESULTS, data)
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    print(table(data))
    return 0 if all(r["agrees"] for r in data.get("models", {}).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
