#!/usr/bin/env bash
# End-to-end demo on the embedded default dataset (SynthML): CPU only, no downloads.
# Every stage writes under $DEMO_DIR (default runs/demo) and skips work whose outputs already exist,
# so an interrupted demo resumes where it stopped. Environment knobs:
#   DEMO_DIR=runs/demo  NUM_MOTIONS=3000  SEED=0
#   THREADS=1     torch threads for the GRU evaluator stages (small ops: one thread is fastest)
#   VQ_THREADS=2  torch threads for the convolutional VQ-VAE stages (use 1 on a busy machine)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
PY=.venv/bin/python
DEMO_DIR="${DEMO_DIR:-runs/demo}"
NUM_MOTIONS="${NUM_MOTIONS:-3000}"
SEED="${SEED:-0}"
THREADS="${THREADS:-1}"
VQ_THREADS="${VQ_THREADS:-2}"
DATA="$DEMO_DIR/SynthML"
VQ="$DEMO_DIR/vq_tiny"
EVALR="$DEMO_DIR/evaluator"
mkdir -p "$DEMO_DIR"
start=$(date +%s)
stage() { echo; echo "=== [$(($(date +%s) - start))s] $* ==="; }

stage "1. Build SynthML ($NUM_MOTIONS motions, seed $SEED)"
$PY -m data.synth --out "$DATA" --num "$NUM_MOTIONS" --seed "$SEED"

stage "2. Render a few test motions"
$PY -m eval.render --dataset-root "$DATA" --split test --num 4 --out "$DEMO_DIR/renders"

stage "3. Word vectors for the evaluator (Word2Vec on SynthML captions)"
$PY -m prepare.build_word_vectors --config configs/tiny/word_vectors.yaml \
  dataset_root="$DATA" output_dir="$DEMO_DIR/glove" seed="$SEED"

stage "4. Train the text/motion evaluator (Guo et al. recipe, tiny sizes)"
$PY -m prepare.train_evaluator --config configs/tiny/evaluator.yaml \
  dataset_root="$DATA" glove_dir="$DEMO_DIR/glove" output_dir="$EVALR" num_threads="$THREADS"

stage "5. Train the tiny VQ-VAE motion tokenizer"
$PY -m prepare.train_vq --config configs/tiny/vq.yaml \
  dataset_root="$DATA" output_dir="$VQ" num_threads="$VQ_THREADS"

stage "6. A test motion beside its VQ reconstruction"
ID=$(head -n 1 "$DATA/test.txt")
$PY -m eval.vq_reconstruct vq_checkpoint="$VQ/net_last.pth" dataset_root="$DATA" "ids=['$ID']" \
  output_dir="$DEMO_DIR/vq_recon"
$PY -m eval.render --npy "$DEMO_DIR/vq_recon/${ID}_gt.npy" "$DEMO_DIR/vq_recon/${ID}_recon.npy" \
  --titles "ground truth" "VQ reconstruction" --out "$DEMO_DIR/vq_recon/$ID.gif"

stage "7. Annotations for SFT stages 0-2 and GRPO prompts (data engine)"
$PY -m data.engine --config configs/tiny/engine.yaml --dataset-root "$DATA" \
  --out "$DEMO_DIR/annotations" seed="$SEED" workers=2

stage "8. Tokenise SynthML and the engine's imperfect motions"
$PY -m prepare.tokenize_motions --config configs/tiny/tokenize.yaml dataset_root="$DATA" \
  vq_checkpoint="$VQ/net_last.pth" output_dir="$VQ/codes" "splits=[all,engine_motions]" \
  num_threads="$VQ_THREADS"

stage "9. Check every annotation file builds (counts and one example per file)"
$PY -m prepare.inspect_annotations --dataset-root "$DATA" --codes-dir "$VQ/codes" \
  --annotations-dir "$DEMO_DIR/annotations" > "$DEMO_DIR/annotations/inspect.txt"
head -n 40 "$DEMO_DIR/annotations/inspect.txt"
echo "... (full listing: $DEMO_DIR/annotations/inspect.txt)"

stage "10. Evaluate: Real motion and VQ-VAE reconstruction rows (test split, batches of 32, 20 replications)"
$PY -m eval.evaluate --config configs/tiny/eval.yaml dataset_root="$DATA" \
  glove_dir="$DEMO_DIR/glove" evaluator_checkpoint="$EVALR/finest.tar" \
  evaluator_meta_dir="$EVALR/meta" vq_checkpoint="$VQ/net_last.pth" vq_meta_dir="$VQ/meta" \
  output_dir="$DEMO_DIR/eval" seed="$SEED" num_threads="$THREADS" replications=20
cat "$DEMO_DIR/eval/eval_test.md"

stage "done in $(($(date +%s) - start))s; outputs under $DEMO_DIR"
