#!/bin/sh
# Every GPU figure in one command (benchmarks/gpu.py): writes benchmarks/RESULTS-gpu.md.
set -e
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m benchmarks.gpu "$@"
