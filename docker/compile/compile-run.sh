#!/bin/sh
# Entry point of the compile image.
#   compile-run RUN_DIR [edgetpu_compiler flags]  compile RUN_DIR/05_export's tflite_int8 into RUN_DIR/06_target/
#                                                 (then, on the host: python -m pipeline target RUN_DIR --compiled RUN_DIR/06_target)
#   compile-run [edgetpu_compiler arguments]      anything else goes to edgetpu_compiler unchanged (--version, --help)
set -eu
COMPILER="${EDGETPU_COMPILER:-edgetpu_compiler}"
if [ "$#" -ge 1 ] && [ -d "$1" ]; then
  run="${1%/}"
  shift
  listing="$run/05_export/artifacts.json"
  if [ ! -f "$listing" ]; then
    echo "error: $listing: missing; finish the export stage first (python -m pipeline run <recipe> --until export)" >&2
    exit 2
  fi
  model=$(python3 - "$listing" <<'PY'
import json, sys
path = json.load(open(sys.argv[1])).get("tflite_int8")
if not path:
    sys.exit(f"error: {sys.argv[1]}: no tflite_int8 artifact; add tflite_int8 to export.formats and re-run")
print(path)
PY
) || exit 2
  out="$run/06_target"
  mkdir -p "$out"
  # -s: print the per-op mapping (which ops run on the Edge TPU, which fall back to the CPU); the printout is kept
  # as edgetpu_compiler.log (its summary: on-chip / off-chip memory, subgraphs), as an in-run compile keeps it
  status=0
  "$COMPILER" -s -o "$out" "$@" "$run/05_export/$model" >"$out/edgetpu_compiler.log" 2>&1 || status=$?
  cat "$out/edgetpu_compiler.log"
  if [ "$status" -eq 0 ]; then
    echo "record it in the run (on the host): python -m pipeline target RUN --compiled RUN/06_target"
  fi
  exit "$status"
fi
exec "$COMPILER" "$@"
