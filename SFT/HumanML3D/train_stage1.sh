#!/usr/bin/env bash
# SFT stage 1 on HumanML3D: the eight meta tasks (full tuning, published settings).
# Settings: configs/humanml3d/sft_stage1.yaml (global batch fixed there; accumulation fills in for fewer GPUs).
#   bash SFT/HumanML3D/train_stage1.sh [key=value overrides]
#   NGPU=4 DEEPSPEED=configs/deepspeed/zero2.json bash SFT/HumanML3D/train_stage1.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"            # GPUs per node (NNODES, NODE_RANK, MASTER_ADDR for several nodes)
export DEEPSPEED="${DEEPSPEED:-}"   # configs/deepspeed/zero2.json: ZeRO-2 through accelerate (needs requirements-gpu.txt)
DATA="${DATA:-dataset/HumanML3D}"
VQ="${VQ:-ckpt/vqvae.pth}"
MODEL="${MODEL:-runs/humanml3d/motion_agent}"
OUT="${OUT:-runs/humanml3d/sft_stage1}"
BASE="${BASE:-checkpoints/gemma-2-2b-it}"
MOTION_AGENT="${MOTION_AGENT:-ckpt/motionllm.pth}"   # Motion-Agent base; set MODEL=runs/humanml3d/sft_stage0/model to start from our stage 0
if [[ "$MODEL" == runs/humanml3d/motion_agent && ! -f "$MODEL/motion_llm.json" ]]; then
  # Import Motion-Agent once: its t2m LoRA merged, its 514 embedding rows copied (spec 2.4).
  "${PY:-.venv/bin/python}" -m prepare.convert_checkpoint --base "$BASE" --checkpoint "$MOTION_AGENT" --out "$MODEL" \
    --vq-checkpoint "$VQ"
fi
exec bash SFT/launch.sh configs/humanml3d/sft_stage1.yaml dataset_root="$DATA" vq_checkpoint="$VQ" \
  codes_dir="$DATA/VQVAE" model_path="$MODEL" output_dir="$OUT" "$@"
