#!/usr/bin/env bash
# Stage-1 model, direct generation only (the README's command for it is a copy of the refinement one, B13).
# Spec sft-and-inference.md section 8.1; settings: configs/kit/eval_llm.yaml (20 replications, greedy).
#   bash SFT/KIT-ML/eval_stage1_t2m.sh [key=value overrides] [--multimodality]
#   NGPU=1 MODEL=runs/kit/sft_stage1/model bash SFT/KIT-ML/eval_stage1_t2m.sh replications=5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"
MODEL="${MODEL:-runs/kit/sft_stage1/model}"
OUT="${OUT:-$(dirname "$MODEL")/eval-t2m}"
exec bash SFT/launch_eval.sh configs/kit/eval_llm.yaml t2m model="$MODEL" output_dir="$OUT" "$@"
