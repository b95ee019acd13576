#!/usr/bin/env bash
# Run every benchmark (scripts/bench_*.py) and print one table of the ratios they report.
#   bash scripts/bench_all.sh                 # quick settings (a few minutes on 2 CPU cores)
#   BENCH_FULL=1 bash scripts/bench_all.sh    # each benchmark's own defaults (the README's figures)
#   BENCH_LOG_DIR=runs/bench bash scripts/bench_all.sh   # where the full outputs go
# Each benchmark prints lines `RATIO <name> <value>` (a speed-up over its baseline measured in the
# same run, or a share of the matmul peak); this script collects them. The exit status is 1 when a
# benchmark failed (e.g. its outputs differ from its baseline), after the table.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh >/dev/null
PY=.venv/bin/python
export HF_HUB_OFFLINE=1
LOG_DIR="${BENCH_LOG_DIR:-runs/bench}"
mkdir -p "$LOG_DIR"

# name | threads | quick arguments (BENCH_FULL=1 drops them)
BENCHES=(
  "bench_motion_repr|1|num_seqs=200 baseline_seqs=3"
  "bench_metrics|1|reps=5"
  "bench_vqvae|2|--threads 2 --rounds 1 --compare"
  "bench_sft|1|--threads 1 --widths 128 256 --rounds 1 --steps 2"
  "bench_generation|1|prompts=16 rounds=2 sides=ours,hf_batched"
  "bench_rewards|1|--config configs/tiny/grpo.yaml"  # needs the demo's assets (runs/demo)
)

status=0
rows=()
for entry in "${BENCHES[@]}"; do
  IFS="|" read -r name threads quick <<<"$entry"
  [ -f "scripts/$name.py" ] || { echo "missing scripts/$name.py" >&2; status=1; continue; }
  args=()
  [ -n "${BENCH_FULL:-}" ] || read -r -a args <<<"$quick"
  log="$LOG_DIR/$name.log"
  echo "=== $name ${args[*]} (log: $log)"
  t0=$(date +%s)
  OMP_NUM_THREADS="$threads" $PY -m "scripts.$name" "${args[@]}" >"$log" 2>&1
  rc=$?
  secs=$(($(date +%s) - t0))
  [ "$rc" -eq 0 ] || status=1
  found=0
  while read -r _ ratio value; do
    rows+=("$name|$ratio|$value|$rc|$secs")
    found=1
  done < <(grep '^RATIO ' "$log")
  [ "$found" -eq 1 ] || rows+=("$name|(no RATIO line)|-|$rc|$secs")
done
# bench_*.py files not listed above still run, with their own defaults
for f in scripts/bench_*.py; do
  name=$(basename "$f" .py)
  case " ${BENCHES[*]} " in *"$name|"*) continue ;; esac
  log="$LOG_DIR/$name.log"
  echo "=== $name (not in the quick list: defaults; log: $log)"
  t0=$(date +%s)
  OMP_NUM_THREADS=1 $PY -m "scripts.$name" >"$log" 2>&1
  rc=$?
  secs=$(($(date +%s) - t0))
  [ "$rc" -eq 0 ] || status=1
  grep -q '^RATIO ' "$log" || rows+=("$name|(no RATIO line)|-|$rc|$secs")
  while read -r _ ratio value; do rows+=("$name|$ratio|$value|$rc|$secs"); done < <(grep '^RATIO ' "$log")
done

echo
echo "| benchmark | ratio | value | exit | seconds |"
echo "|---|---|---|---|---|"
for r in "${rows[@]}"; do
  IFS="|" read -r name ratio value rc secs <<<"$r"
  echo "| $name | $ratio | $value | $rc | $secs |"
done
echo
echo "speed-ups are x over the baseline measured in the same run; share_of_peak and mfu are fractions of the float32 matmul peak"
exit "$status"
