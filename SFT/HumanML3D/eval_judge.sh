#!/usr/bin/env bash
# The model as a reward model: log P("No refinements needed.") as an alignment score (needs the engine's imperfect motions).
# Spec sft-and-inference.md section 8.1; settings: configs/humanml3d/eval_llm.yaml (20 replications, greedy).
#   bash SFT/HumanML3D/eval_judge.sh [key=value overrides] [--multimodality]
#   NGPU=1 MODEL=runs/humanml3d/sft_stage1/model bash SFT/HumanML3D/eval_judge.sh replications=5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"
MODEL="${MODEL:-runs/humanml3d/sft_stage1/model}"
OUT="${OUT:-$(dirname "$MODEL")/eval-judge}"
exec bash SFT/launch_eval.sh configs/humanml3d/eval_llm.yaml judge model="$MODEL" output_dir="$OUT" "$@"
