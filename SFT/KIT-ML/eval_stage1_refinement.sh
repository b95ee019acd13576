#!/usr/bin/env bash
# Stage-1 model: t2m, then up to 5 instructed-refinement rounds; one table row per round.
# Spec sft-and-inference.md section 8.1; settings: configs/kit/eval_llm.yaml (20 replications, greedy).
#   bash SFT/KIT-ML/eval_stage1_refinement.sh [key=value overrides] [--multimodality]
#   NGPU=1 MODEL=runs/kit/sft_stage1/model bash SFT/KIT-ML/eval_stage1_refinement.sh replications=5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"
MODEL="${MODEL:-runs/kit/sft_stage1/model}"
OUT="${OUT:-$(dirname "$MODEL")/eval-direct_generation-instructed_refinement}"
exec bash SFT/launch_eval.sh configs/kit/eval_llm.yaml direct_generation-instructed_refinement model="$MODEL" output_dir="$OUT" "$@"
