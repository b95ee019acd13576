#!/usr/bin/env bash
# Fetch the released Guo et al. evaluators (text_mot_match finest.tar + meta folders) for
# HumanML3D (t2m.zip) and KIT-ML (kit.zip) -- spec section 7.
#
#   bash prepare/download_extractor.sh [DEST] [DATASETS]   # DEST=checkpoints, DATASETS="humanml3d kit"
#
# Unlike the published script this NEVER deletes DEST (pitfall 17: it may hold VQ/LLM weights):
# archives are unpacked into a temporary folder and only files missing from DEST are copied.
# Each dataset's tree is then verified (strict load of finest.tar, meta shapes). Needs gdown and
# a network; without them it says what to place where and exits 1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source prepare/_gdrive.sh
DEST="${1:-checkpoints}"  # relative paths are relative to the repository root
DEST_ABS="$DEST"; [[ "$DEST" == /* ]] || DEST_ABS="$ROOT/$DEST"
DATASETS="${2:-humanml3d kit}"

zip_id() { case "$1" in humanml3d) echo "1FIiqtkt4F-GVWmnBgtZnv9W3cPWS-oM- t2m" ;;
                        kit) echo "1KNU8CsMAnxFrwopKBBkC8jEULGLPBHQp kit" ;;
                        *) echo "download_extractor: unknown dataset '$1' (humanml3d, kit)" >&2; exit 2 ;; esac; }

manual() {
  local id="$1" name="$2"
  cat >&2 <<MSG

download_extractor: could not download $name.zip automatically. To set up by hand:
  1. On a machine with a network: pip install gdown && gdown --id $id -O $name.zip
  2. Unzip it so that these exist (nothing else in $DEST/ needs to move):
       $DEST_ABS/$name/text_mot_match/model/finest.tar
       $DEST_ABS/$name/Comp_v6_KLD005/meta/mean.npy, std.npy          (evaluator normalisation)
       $DEST_ABS/$name/VQVAEV3_CB1024_CMT_H1024_NRES3/meta/mean.npy, std.npy
  3. Check them: $PY -m prepare.verify_assets evaluator $DEST --dataset <humanml3d|kit>
For SynthML (the offline default) train an evaluator instead:
  $PY -m prepare.train_evaluator --config configs/tiny/evaluator.yaml
MSG
}

status=0
for ds in $DATASETS; do
  read -r id name <<<"$(zip_id "$ds")"
  if "$PY" -m prepare.verify_assets evaluator "$DEST" --dataset "$ds" 2>/dev/null; then
    continue
  fi
  tmp="$(mktemp -d)"
  if fetch_gdrive "$id" "$tmp/$name.zip"; then
    unzip -q "$tmp/$name.zip" -d "$tmp/unzipped"
    mkdir -p "$DEST"
    # cp -n: keep whatever the user already has in DEST.
    cp -rn "$tmp/unzipped/." "$DEST/"
    "$PY" -m prepare.verify_assets evaluator "$DEST" --dataset "$ds" || status=1
  else
    manual "$id" "$name"
    status=1
  fi
  rm -rf "$tmp"
done
exit "$status"
