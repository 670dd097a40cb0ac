#!/bin/sh
# The wheels the GPU machine image lacks (tools/gpu_wheels.txt), downloaded where pip reaches PyPI, for
# CPython 3.12 on manylinux x86_64, into an ignored folder a device run carries (default .whl/); fails when
# they would not fit the 64 MiB a run may carry. Then, on the GPU machine: sh tools/gpu_oneshot.sh
#
#   sh tools/gpu_wheelhouse.sh [DIR]        PYTHON=python3 (any Python with pip: the target is pinned)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/.whl}
py=${PYTHON:-python3}
max_mib=${GANRT_WHEELS_MAX_MIB:-64}
fresh=$(mktemp -d "${TMPDIR:-/tmp}/ganrt-wheels.XXXXXX")
trap 'rm -rf "$fresh"' EXIT
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$fresh" -r "$root/tools/gpu_wheels.txt"
mkdir -p "$dir"
rm -f "$dir"/*.whl  # one version of each: two would stop the install there
mv "$fresh"/*.whl "$dir"/
kib=$(du -sk "$dir" | cut -f1)
ls -1 "$dir"
echo "$(ls "$dir"/*.whl | wc -l) wheels, $((kib / 1024)) MiB in $dir"
if [ "$kib" -gt $((max_mib * 1024)) ]; then
    echo "gpu-wheelhouse: $dir holds ${kib} KiB, more than the ${max_mib} MiB a device run carries" >&2
    exit 1
fi
