#!/usr/bin/env bash
# End-to-end demo on the embedded default dataset (SynthML): CPU only, no downloads.
# Every stage writes under $DEMO_DIR (default runs/demo) and skips work whose outputs already exist,
# so an interrupted demo resumes where it stopped. Environment knobs:
#   DEMO_PROFILE=quick  quick: the tiny configs with the overrides below (27.6 min on 2 CPU cores, measured);
#                       full: a wider tiny LLM (4.4M parameters), more epochs and entries (see the case below).
#                       The motion LLM stages of a profile go to $DEMO_DIR/<profile>/; the data,
#                       evaluator and VQ-VAE stages are shared by both profiles.
#   DEMO_DIR=runs/demo  NUM_MOTIONS=3000  SEED=0
#   THREADS=1     torch threads for the GRU evaluator and per LLM process (one thread is fastest
#                 for small ops, and far faster than two when another process holds a core)
#   NPROC=2       processes for the LLM stages (SFT, evaluation, GRPO: torchrun, gloo, one core each;
#                 the numbers are the same with NPROC=1, which takes about twice as long)
#   VQ_THREADS=2  torch threads for the convolutional VQ-VAE stages (use 1 on a busy machine)
#   PROGRESS_INTERVAL_S=30  seconds between progress lines when the output is not a terminal
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
NPROC="${NPROC:-2}"
DEMO_PROFILE="${DEMO_PROFILE:-quick}"
DATA="$DEMO_DIR/SynthML"
VQ="$DEMO_DIR/vq_tiny"
EVALR="$DEMO_DIR/evaluator"
A="$DEMO_DIR/annotations"
LLM="$DEMO_DIR/$DEMO_PROFILE"   # this profile's tiny base, SFT stages (and later GRPO, evaluations)
# Per-profile overrides of configs/tiny/{llm,sft_stage0,sft_stage1,sft_stage2}.yaml
case "$DEMO_PROFILE" in
  quick)
    LLM_OPTS=()
    # stage 0 on the two caption -> codes files (no M2T: stage 1 teaches captioning), a high rate
    SFT0_FILES="$A/stage_0_annotations.json,$A/stage-1/T2M_direct_generation_annots.json"
    SFT0_OPTS=(training.learning_rate=3.0e-3 training.epochs=10)
    # 400 entries of each meta task, every direct-generation entry (keeps the stage-0 skill)
    SFT1_OPTS=(max_entries_per_file=400 "uncapped_files=[T2M_direct_generation_annots.json]")
    SFT2_OPTS=(max_entries_per_file=400 training.learning_rate=1.5e-3)
    GRPO_OPTS=(max_prompts=32)  # 16 steps of 2 prompts x 4 completions
    ;;
  full)
    # a 4.4M-parameter model (width 256), the quick profile's recipe with more of every stage
    LLM_OPTS=(hidden_size=256 intermediate_size=1024 head_dim=64)
    SFT0_FILES="$A/stage_0_annotations.json,$A/stage-1/T2M_direct_generation_annots.json"
    SFT0_OPTS=(training.learning_rate=2.0e-3 training.epochs=15)
    SFT1_OPTS=(max_entries_per_file=1200 "uncapped_files=[T2M_direct_generation_annots.json]")
    SFT2_OPTS=(max_entries_per_file=1200 training.learning_rate=1.0e-3)
    GRPO_OPTS=(max_prompts=64)  # 32 steps of 2 prompts x 4 completions
    ;;
  *)
    echo "DEMO_PROFILE=$DEMO_PROFILE: use quick (default) or full" >&2
    exit 2
    ;;
esac
mkdir -p "$DEMO_DIR" "$LLM"
llm() {  # run a module of the LLM stages on $NPROC processes
  local module="$1"; shift
  if [ "$NPROC" -gt 1 ]; then
    OMP_NUM_THREADS="$THREADS" $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m "$module" "$@"
  else
    $PY -m "$module" "$@"
  fi
}
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
  --out "$A" seed="$SEED" workers=2

stage "8. Tokenise SynthML and the engine's imperfect motions"
$PY -m prepare.tokenize_motions --config configs/tiny/tokenize.yaml dataset_root="$DATA" \
  vq_checkpoint="$VQ/net_last.pth" output_dir="$VQ/codes" "splits=[all,engine_motions]" \
  num_threads="$VQ_THREADS"

stage "9. Check every annotation file builds (counts and one example per file)"
$PY -m prepare.inspect_annotations --dataset-root "$DATA" --codes-dir "$VQ/codes" \
  --annotations-dir "$A" > "$A/inspect.txt"
head -n 40 "$A/inspect.txt"
echo "... (full listing: $A/inspect.txt)"

stage "10. Evaluate: Real motion and VQ-VAE reconstruction rows (test split, batches of 32, 20 replications)"
# eval.evaluate logs its table when it computes it; a finished evaluation is kept silently, so the
# table is printed here only then (once either way)
EVAL_MD="$DEMO_DIR/eval/eval_test.md"
EVAL_DONE=""
[ ! -f "$EVAL_MD" ] || EVAL_DONE=1
$PY -m eval.evaluate --config configs/tiny/eval.yaml dataset_root="$DATA" \
  glove_dir="$DEMO_DIR/glove" evaluator_checkpoint="$EVALR/finest.tar" \
  evaluator_meta_dir="$EVALR/meta" vq_checkpoint="$VQ/net_last.pth" vq_meta_dir="$VQ/meta" \
  output_dir="$DEMO_DIR/eval" seed="$SEED" num_threads="$THREADS" replications=20
[ -z "$EVAL_DONE" ] || cat "$EVAL_MD"

stage "11. Tiny base LLM (stands in for gemma-2-2b-it; profile $DEMO_PROFILE)"
$PY -m prepare.build_tiny_llm --config configs/tiny/llm.yaml dataset_root="$DATA" annotations_dir="$A" \
  output_dir="$LLM/tiny_llm" num_threads="$THREADS" "${LLM_OPTS[@]}"

SFT=(dataset_root="$DATA" vq_checkpoint="$VQ/net_last.pth" codes_dir="$VQ/codes" num_threads="$THREADS")
stage "12. SFT stage 0 (caption -> motion codes)"
llm SFT.train_sft --config configs/tiny/sft_stage0.yaml "${SFT[@]}" model_path="$LLM/tiny_llm" \
  output_dir="$LLM/sft_stage0" "annotation_files=[$SFT0_FILES]" \
  "${SFT0_OPTS[@]}"

stage "13. SFT stage 1 (eight meta tasks)"
STAGE1_FILES=""
for task in T2M_direct_generation T2M_detailed_prompt_generation M2T_motion_caption T2T_prompt_analysis \
  TM2T_assessment_analysis TM2T_refinement_instruction TM2M_direct_refinement TM2M_instructed_motion_refinement; do
  STAGE1_FILES+="${STAGE1_FILES:+,}$A/stage-1/${task}_annots.json"
done
llm SFT.train_sft --config configs/tiny/sft_stage1.yaml "${SFT[@]}" model_path="$LLM/sft_stage0/model" \
  output_dir="$LLM/sft_stage1" "annotation_files=[$STAGE1_FILES]" "${SFT1_OPTS[@]}"

stage "14. SFT stage 2 (IRMoGen dialogues)"
llm SFT.train_sft --config configs/tiny/sft_stage2.yaml "${SFT[@]}" model_path="$LLM/sft_stage1/model" \
  output_dir="$LLM/sft_stage2" "annotation_files=[$A/stage-2/sft_motion_assess_cot_v2.json]" \
  "${SFT2_OPTS[@]}"

EV=(dataset_root="$DATA" glove_dir="$DEMO_DIR/glove" evaluator_checkpoint="$EVALR/finest.tar"
    evaluator_meta_dir="$EVALR/meta" num_threads="$THREADS" max_new_tokens=80 render_samples=2)
E="$LLM/eval_llm"
stage "15. Evaluate stage 0 (direct T2M in its training layout)"
llm eval.evaluate_llm --config configs/tiny/eval_llm.yaml "${EV[@]}" model="$LLM/sft_stage0/model" \
  task=t2m_stage0 output_dir="$E/stage0_t2m"
stage "16. Evaluate stage 1 (direct generation, then up to 5 instructed refinement rounds)"
llm eval.evaluate_llm --config configs/tiny/eval_llm.yaml "${EV[@]}" model="$LLM/sft_stage1/model" \
  task=direct_generation-instructed_refinement output_dir="$E/stage1_refinement"
stage "17. Evaluate stage 2 (IRMoGen reasoning chain, every motion of the chain)"
llm eval.evaluate_llm --config configs/tiny/eval_llm.yaml "${EV[@]}" model="$LLM/sft_stage2/model" \
  task=unified_mogen_cot_v3 max_new_tokens=400 output_dir="$E/stage2_cot"

stage "18. Stage 3: GRPO on TRL from the stage-2 model"
llm RL.train_grpo --config configs/tiny/grpo.yaml dataset_root="$DATA" model_path="$LLM/sft_stage2/model" \
  output_dir="$LLM/grpo" prompts_file="$A/stage-3/grpo_prompts.jsonl" vq_checkpoint="$VQ/net_last.pth" \
  vq_meta_dir="$VQ/meta" evaluator_checkpoint="$EVALR/finest.tar" evaluator_meta_dir="$EVALR/meta" \
  glove_dir="$DEMO_DIR/glove" num_threads="$THREADS" training.per_device_batch_size=$((8 / NPROC)) \
  "${GRPO_OPTS[@]}"
stage "19. Evaluate stage 3"
llm eval.evaluate_llm --config configs/tiny/eval_llm.yaml "${EV[@]}" model="$LLM/grpo/model" \
  task=unified_mogen_cot_v3 max_new_tokens=400 output_dir="$E/stage3_cot"

stage "20. One table: a row per stage and round, beside Real motion and the VQ-VAE (same 3 replications)"
$PY -m eval.evaluate --config configs/tiny/eval.yaml dataset_root="$DATA" \
  glove_dir="$DEMO_DIR/glove" evaluator_checkpoint="$EVALR/finest.tar" \
  evaluator_meta_dir="$EVALR/meta" vq_checkpoint="$VQ/net_last.pth" vq_meta_dir="$VQ/meta" \
  output_dir="$E/data" seed="$SEED" num_threads="$THREADS" replications=3 > "$E/data.log" 2>&1 \
  || { cat "$E/data.log"; exit 1; }  # its own table would be a second one: kept in data.log
# eval.compare prints the table and writes it to table.md
$PY -m eval.compare "$E/data" "$E/stage0_t2m" "$E/stage1_refinement" "$E/stage2_cot" "$E/stage3_cot" \
  --labels data "stage 0" "stage 1" "stage 2" "stage 3" --out "$E/table.md"

stage "done in $(($(date +%s) - start))s; outputs under $DEMO_DIR"
