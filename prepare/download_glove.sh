#!/usr/bin/env bash
# Fetch the GloVe vocabulary the released Guo evaluators use (spec sections 5 and 7).
#
#   bash prepare/download_glove.sh [DEST]          # DEST defaults to glove/
#
# Writes DEST/our_vab_data.npy, our_vab_words.pkl, our_vab_idx.pkl (4,199 x 300). Never deletes:
# files already in DEST are kept (only missing ones are added) and the tree is verified at the end.
# Needs gdown (pip install gdown) and a network; without them it says what to place where and
# exits 1. SynthML needs no download: python -m prepare.build_word_vectors builds its vectors.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source prepare/_gdrive.sh
DEST="${1:-glove}"  # relative paths are relative to the repository root
DEST_ABS="$DEST"; [[ "$DEST" == /* ]] || DEST_ABS="$ROOT/$DEST"
GLOVE_ID="1bCeS6Sh_mLVTebxIgiUHgdPrroW06mb6"
FILES=(our_vab_data.npy our_vab_words.pkl our_vab_idx.pkl)

manual() {
  cat >&2 <<MSG

download_glove: could not download automatically. To set up by hand:
  1. On a machine with a network: pip install gdown && gdown --id $GLOVE_ID -O glove.zip
     (Google Drive file $GLOVE_ID, the text-to-motion / T2M-GPT glove.zip)
  2. Unzip it and copy the three files ${FILES[*]}
     into $DEST_ABS/
  3. Check them: $PY -m prepare.verify_assets glove $DEST
For SynthML (the offline default) no download is needed:
  $PY -m prepare.build_word_vectors --config configs/tiny/word_vectors.yaml
MSG
}

have_all=1
for f in "${FILES[@]}"; do [[ -f "$DEST/$f" ]] || have_all=0; done
if (( have_all )); then
  echo "download_glove: $DEST already holds ${FILES[*]}; verifying"
  exec "$PY" -m prepare.verify_assets glove "$DEST"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! fetch_gdrive "$GLOVE_ID" "$tmp/glove.zip"; then manual; exit 1; fi
unzip -q "$tmp/glove.zip" -d "$tmp/unzipped"
mkdir -p "$DEST"
for f in "${FILES[@]}"; do
  src="$(find "$tmp/unzipped" -name "$f" -type f | head -n 1)"
  [[ -n "$src" ]] || { echo "download_glove: glove.zip has no $f" >&2; manual; exit 1; }
  [[ -e "$DEST/$f" ]] || cp "$src" "$DEST/$f"
done
exec "$PY" -m prepare.verify_assets glove "$DEST"
