#!/usr/bin/env bash
# Stage-2/3 robustness test: the first motion replaced by a random test clip (section 8.6).
# Spec sft-and-inference.md section 8.1; settings: configs/kit/eval_llm.yaml (20 replications, greedy).
#   bash SFT/KIT-ML/eval_stage2_random_flip.sh [key=value overrides] [--multimodality]
#   NGPU=1 MODEL=runs/kit/sft_stage2/model bash SFT/KIT-ML/eval_stage2_random_flip.sh replications=5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"
MODEL="${MODEL:-runs/kit/sft_stage2/model}"
OUT="${OUT:-$(dirname "$MODEL")/eval-unified_mogen_cot_v3_random_flip}"
exec bash SFT/launch_eval.sh configs/kit/eval_llm.yaml unified_mogen_cot_v3_random_flip model="$MODEL" output_dir="$OUT" "$@"
