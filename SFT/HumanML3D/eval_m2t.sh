#!/usr/bin/env bash
# Motion-to-text captioning (BLEU-1/4, ROUGE-L, CIDEr, R-precision and MM-Dist of the captions).
# Spec sft-and-inference.md section 8.1; settings: configs/humanml3d/eval_llm.yaml (20 replications, greedy).
#   bash SFT/HumanML3D/eval_m2t.sh [key=value overrides] [--multimodality]
#   NGPU=1 MODEL=runs/humanml3d/sft_stage1/model bash SFT/HumanML3D/eval_m2t.sh replications=5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"
MODEL="${MODEL:-runs/humanml3d/sft_stage1/model}"
OUT="${OUT:-$(dirname "$MODEL")/eval-m2t}"
exec bash SFT/launch_eval.sh configs/humanml3d/eval_llm.yaml m2t model="$MODEL" output_dir="$OUT" "$@"
