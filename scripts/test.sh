#!/usr/bin/env bash
# Set up the environment (idempotent) and run the test suite on CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# One OpenMP thread per process: tiny models are fastest that way, and the torchrun tests start
# two processes on a 2-core machine.
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
