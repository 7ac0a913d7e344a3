#!/usr/bin/env bash
# One prepared GPU benchmark run (under 5 minutes on one H200). Uses the machine's python3 with PyTorch;
# the package is imported from src/ so nothing needs installing. Figures go to stdout (and $OUT/gpu.json).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 -m benchmarks.gpu "$@"
