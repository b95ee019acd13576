#!/usr/bin/env bash
# Shared launcher of the evaluation scripts: SFT/launch_eval.sh CONFIG TASK [key=value ...] [--multimodality]
# Environment (set by the per-dataset scripts, overridable): NGPU (processes), MASTER_PORT, PY (python of the .venv).
# Same numbers with any NGPU (the ranks share the test batches; generation seeds depend only on the batch).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG="$1"; TASK="$2"; shift 2
PY="${PY:-.venv/bin/python}"
NGPU="${NGPU:-8}"
MASTER_PORT="${MASTER_PORT:-29501}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" --master_port "$MASTER_PORT" \
  -m eval.evaluate_llm --config "$CONFIG" task="$TASK" "$@"
