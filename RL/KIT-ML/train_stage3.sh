#!/usr/bin/env bash
# Stage 3 (GRPO) on KIT-ML: from the stage-2 model, published settings (configs/kit/grpo.yaml:
# 32 prompts x G 4 per optimizer step whatever the GPU count; accumulation fills in for fewer GPUs).
#   bash RL/KIT-ML/train_stage3.sh [key=value overrides]
#   NGPU=4 DEEPSPEED=configs/deepspeed/zero2.json bash RL/KIT-ML/train_stage3.sh
#   bash RL/KIT-ML/train_stage3.sh vllm.use_vllm=true      # generate with vLLM (pip install vllm)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"            # GPUs per node (NNODES, NODE_RANK, MASTER_ADDR for several nodes)
export DEEPSPEED="${DEEPSPEED:-}"   # configs/deepspeed/zero2.json: ZeRO-2 through accelerate (needs requirements-gpu.txt)
DATA="${DATA:-dataset/KIT-ML}"
VQ="${VQ:-ckpt/vqvae_kit.pth}"
MODEL="${MODEL:-runs/kit/sft_stage2/model}"
OUT="${OUT:-runs/kit/grpo}"
exec bash RL/launch.sh configs/kit/grpo.yaml dataset_root="$DATA" vq_checkpoint="$VQ" \
  prompts_file="$DATA/annotations/stage-3/grpo_prompts.jsonl" model_path="$MODEL" output_dir="$OUT" "$@"
