#!/usr/bin/env bash
# End-to-end demo on the embedded default dataset (SynthML), CPU only, no downloads.
# Each stage writes under $DEMO_DIR (default runs/demo) and is skipped when its outputs exist.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
PY=.venv/bin/python
DEMO_DIR="${DEMO_DIR:-runs/demo}"
NUM_MOTIONS="${NUM_MOTIONS:-3000}"
DATA="$DEMO_DIR/SynthML"
mkdir -p "$DEMO_DIR"
start=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - start ))s] $* ==="; }

stage "1. Build SynthML ($NUM_MOTIONS motions)"
$PY -m data.synth --out "$DATA" --num "$NUM_MOTIONS" --seed 0

stage "2. Render a few test motions"
$PY -m eval.render --dataset-root "$DATA" --split test --num 4 --out "$DEMO_DIR/renders"

stage "done in $(( $(date +%s) - start ))s"
