#!/usr/bin/env bash
# SFT stage 0 on HumanML3D: the base learns T2M and M2T (LoRA r64 + motion rows).
# Settings: configs/humanml3d/sft_stage0.yaml (global batch fixed there; accumulation fills in for fewer GPUs).
#   bash SFT/HumanML3D/train_stage0.sh [key=value overrides]
#   NGPU=4 DEEPSPEED=configs/deepspeed/zero2.json bash SFT/HumanML3D/train_stage0.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"            # GPUs per node (NNODES, NODE_RANK, MASTER_ADDR for several nodes)
export DEEPSPEED="${DEEPSPEED:-}"   # configs/deepspeed/zero2.json: ZeRO-2 through accelerate (needs requirements-gpu.txt)
DATA="${DATA:-dataset/HumanML3D}"
VQ="${VQ:-ckpt/vqvae.pth}"
MODEL="${MODEL:-checkpoints/gemma-2-2b-it}"
OUT="${OUT:-runs/humanml3d/sft_stage0}"
exec bash SFT/launch.sh configs/humanml3d/sft_stage0.yaml dataset_root="$DATA" vq_checkpoint="$VQ" \
  codes_dir="$DATA/VQVAE" model_path="$MODEL" output_dir="$OUT" "$@"
