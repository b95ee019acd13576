#!/usr/bin/env bash
# Shared launcher of the stage-3 scripts: RL/launch.sh CONFIG [key=value ...]
# Environment (set by the stage scripts, overridable): NGPU (processes per node), NNODES, NODE_RANK,
# MASTER_ADDR, MASTER_PORT, DEEPSPEED (a DeepSpeed JSON -> accelerate launch with ZeRO-2; empty -> torchrun DDP),
# PY (python of the project's .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG="$1"; shift
PY="${PY:-.venv/bin/python}"
NGPU="${NGPU:-8}"; NNODES="${NNODES:-1}"; NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"; MASTER_PORT="${MASTER_PORT:-29500}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
if [[ -n "${DEEPSPEED:-}" ]]; then
  exec "$PY" -m accelerate.commands.launch --config_file configs/deepspeed/accelerate_zero2.json \
    --num_processes $((NGPU * NNODES)) --num_machines "$NNODES" --machine_rank "$NODE_RANK" \
    --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
    -m RL.train_grpo --config "$CONFIG" training.deepspeed="$DEEPSPEED" "$@"
fi
exec "$PY" -m torch.distributed.run --nproc_per_node "$NGPU" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" -m RL.train_grpo --config "$CONFIG" "$@"
