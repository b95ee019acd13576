#!/usr/bin/env bash
# Stage 3 (GRPO) on HumanML3D: from the stage-2 model, published settings (configs/humanml3d/grpo.yaml:
# 32 prompts x G 4 per optimizer step whatever the GPU count; accumulation fills in for fewer GPUs).
#   bash RL/HumanML3D/train_stage3.sh [key=value overrides]
#   NGPU=4 DEEPSPEED=configs/deepspeed/zero2.json bash RL/HumanML3D/train_stage3.sh
#   bash RL/HumanML3D/train_stage3.sh vllm.use_vllm=true      # generate with vLLM (pip install vllm)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NGPU="${NGPU:-8}"            # GPUs per node (NNODES, NODE_RANK, MASTER_ADDR for several nodes)
export DEEPSPEED="${DEEPSPEED:-}"   # configs/deepspeed/zero2.json: ZeRO-2 through accelerate (needs requirements-gpu.txt)
DATA="${DATA:-dataset/HumanML3D}"
VQ="${VQ:-ckpt/vqvae.pth}"
MODEL="${MODEL:-runs/humanml3d/sft_stage2/model}"
OUT="${OUT:-runs/humanml3d/grpo}"
exec bash RL/launch.sh configs/humanml3d/grpo.yaml dataset_root="$DATA" vq_checkpoint="$VQ" \
  prompts_file="$DATA/annotations/stage-3/grpo_prompts.jsonl" model_path="$MODEL" output_dir="$OUT" "$@"
