#!/bin/sh
# `make gpu-check` in one command on a GPU machine with CUDA torch and no network (python3.12, torch, onnx,
# onnxruntime CPU; no TensorRT): installs the carried wheels (.whl/, made by tools/gpu_wheelhouse.sh) and
# ganrt itself with --no-index into a temporary folder, runs tools/gpu_check.py (every torch CUDA variant:
# eager, channels_last, CUDA graphs, compile; parity; batches 1, 8, 64, 256; the threaded case), and writes
# report.md and results.json into $OUT (else gpu-check-out/). Exit status: gpu_check's (1: a variant failed,
# 2: no GPU, 124: stopped at 7 min 55 s, the report written so far kept); a variant starts only while it can
# end within 7 minutes (tools/gpu_check.py --budget-min), the others are listed as skipped.
#
#   sh tools/gpu_oneshot.sh [--dry-run] [tools/gpu_check.py options]
#
# --dry-run rehearses it on a CPU machine: the wheels are resolved for CPython 3.12 on manylinux without
# being installed, ganrt is installed the same way, and gpu_check.py runs with --dry-run.
set -eu
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
wheels=${GANRT_WHEELS:-.whl}
out=${OUT:-gpu-check-out}
dry=""
if [ "${1:-}" = "--dry-run" ]; then dry=--dry-run; shift; fi
site=$(mktemp -d "${TMPDIR:-/tmp}/ganrt-site.XXXXXX")
trap 'rm -rf "$site"' EXIT
if ls "$wheels"/*.whl >/dev/null 2>&1; then
    if [ -n "$dry" ]; then
        "$py" -m pip install --dry-run --no-index --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --target "$site" "$wheels"/*.whl
    else
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    fi
elif [ -z "$dry" ]; then
    echo "gpu-check: no wheels in $wheels: run sh tools/gpu_wheelhouse.sh where pip reaches PyPI, and carry $wheels" >&2
    exit 2
else
    echo "gpu-check: dry run: no wheels in $wheels (tools/gpu_wheelhouse.sh makes them); this Python's own are used" >&2
fi
"$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" .
stop=""
if command -v timeout >/dev/null 2>&1; then stop="timeout 475"; fi
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" $stop "$py" tools/gpu_check.py --require-gpu --budget-min 7 \
    --report "$out" $dry "$@"
