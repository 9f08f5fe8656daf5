#!/usr/bin/env bash
# The checks and figures that need a GPU, as one script for a short-lived GPU machine (issues 17, 21).
#
#   bash benchmarks/gpu_session.sh check     # CUDA tests, the default recipe on the GPU, 224 px step costs
#   bash benchmarks/gpu_session.sh methods   # benchmarks/distill_methods.py, both datasets, rows in parallel
#
# Results land in $OUT (default /tmp/gpu-out). Python packages the machine lacks travel as wheels in
# .whl/ (installed to /tmp/site); datasets in .gpu/ (Fashion-MNIST's IDX files in .gpu/fashion-mnist,
# MNIST's mnist.pkl.gz in .gpu/mnist) are put at the pipeline's default roots.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
if [ -d .gpu/fashion-mnist ]; then mkdir -p /usr/share/datasets && ln -sfn "$PWD/.gpu/fashion-mnist" /usr/share/datasets/fashion-mnist; fi
if [ -f .gpu/mnist/mnist.pkl.gz ]; then mkdir -p ~/.cache/pipeline/mnist && cp .gpu/mnist/mnist.pkl.gz ~/.cache/pipeline/mnist/; fi
PY=${PY:-python3}

manifest() {  # what a run's distill stage recorded about where and how fast it trained
  $PY - "$1" <<'EOF'
import json, sys
m = json.load(open(f"{sys.argv[1]}/03_distill/manifest.json"))
t = json.load(open(f"{sys.argv[1]}/02_teacher/manifest.json"))
keys = ("test_acc", "seconds_per_epoch", "teacher_ms_per_batch", "student_ms_per_batch", "teacher_precision")
print(json.dumps({"distill": {"placement": m.get("placement"), **{k: m["metrics"].get(k) for k in keys},
                              "seconds": m.get("seconds")},
                  "teacher": {"placement": t.get("placement"), "test_acc": t["metrics"].get("test_acc"),
                              "seconds_per_epoch": t["metrics"].get("seconds_per_epoch"), "seconds": t.get("seconds")},
                  "qat": {k: v for k, v in json.load(open(f"{sys.argv[1]}/04_qat/manifest.json"))["metrics"].items()
                          if isinstance(v, (int, float, str))}}))
EOF
}

case "${1:-check}" in
check)
  nvidia-smi -L | tee "$OUT/device.txt"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" | tee -a "$OUT/device.txt"
  # the tests that train: on this machine train.device auto resolves to the GPU
  timeout 150 $PY -m pytest -q -p no:cacheprovider --durations=8 tests/test_placement.py tests/test_train_loop.py \
    tests/test_bn_recalibration.py tests/test_distributed.py tests/test_timm_models.py 2>&1 | tee "$OUT/pytest.log" | tail -25
  # the default recipe through distill and QAT on the GPU, fp32 and bf16
  for run in "gpu-fp32" "gpu-bf16 --set train.precision=bf16"; do
    name=${run%% *}; rest=${run#"$name"}
    /usr/bin/time -f "$name wall %e s" $PY -m pipeline run edge_tpu.yaml --until qat --fresh --name "$name" $rest \
      --set target.check_before_training=false > "$OUT/run-$name.log" 2>&1 || tail -5 "$OUT/run-$name.log"
    tail -1 "$OUT/run-$name.log"
    manifest "$(ls -d runs/"$name" targets/runs/"$name" 2>/dev/null | head -1)" | tee "$OUT/manifest-$name.json"
  done
  timeout 120 $PY benchmarks/train_throughput.py --parts steps224 --steps 40 --results "$OUT/train_throughput_gpu.json" 2>&1 | tail -12
  ;;
methods)
  RUNS=/tmp/dm-runs RES="$OUT/distill_methods_gpu.json"
  rows() { $PY -c "import sys; sys.path.insert(0, 'benchmarks'); import distill_methods as d; print(' '.join($1))"; }
  jobs=()
  for t in $(rows "d.TEACHERS"); do jobs+=("--teachers $t"); done
  for r in $(rows "d.ROWS"); do jobs+=("--rows $r"); done
  for r in $(rows "[d.default_row(n) for n in d.LOSSES] + ['kd-expressive', 'icc-expressive']"); do jobs+=("--dataset mnist --rows $r"); done
  echo "${#jobs[@]} jobs"
  printf '%s\n' "${jobs[@]}" | timeout "${METHODS_S:-3600}" xargs -P "${JOBS:-12}" -I{} sh -c \
    "$PY benchmarks/distill_methods.py --threads 1 --runs-dir $RUNS --results $RES {} > /dev/null 2>> $OUT/methods-errors.log || echo 'FAILED: {}' >> $OUT/methods-errors.log"
  $PY benchmarks/distill_methods.py --table --results "$RES" | tee "$OUT/methods-table.md"
  tail -20 "$OUT/methods-errors.log" 2>/dev/null
  ;;
esac
