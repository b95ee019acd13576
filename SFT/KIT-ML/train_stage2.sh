#!/usr/bin/env bash
# SFT stage 2 on KIT-ML: the IRMoGen dialogues (full tuning, published settings).
# Settings: configs/kit/sft_stage2.yaml (global batch fixed there; accumulation fills in for fewer GPUs).
#   bash SFT/KIT-ML/train_stage2.sh [key=value overrides]
#   NGPU=4 DEEPSPEED=configs/deepspeed/zero2.json bash SFT/KIT-ML/train_stage2.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"            # GPUs per node (NNODES, NODE_RANK, MASTER_ADDR for several nodes)
export DEEPSPEED="${DEEPSPEED:-}"   # configs/deepspeed/zero2.json: ZeRO-2 through accelerate (needs requirements-gpu.txt)
DATA="${DATA:-dataset/KIT-ML}"
VQ="${VQ:-ckpt/vqvae_kit.pth}"
MODEL="${MODEL:-runs/kit/sft_stage1/model}"
OUT="${OUT:-runs/kit/sft_stage2}"
exec bash SFT/launch.sh configs/kit/sft_stage2.yaml dataset_root="$DATA" vq_checkpoint="$VQ" \
  codes_dir="$DATA/VQVAE" model_path="$MODEL" output_dir="$OUT" "$@"
