#!/usr/bin/env bash
# Explain where the real datasets come from and verify them once placed (spec sections 1.7, 7).
#
#   bash prepare/download_datasets.sh [HUMANML3D_ROOT] [KIT_ROOT]   # dataset/HumanML3D dataset/KIT-ML
#
# HumanML3D cannot be downloaded: its features are rebuilt from AMASS (licence-gated) with the
# HumanML3D repository's scripts. KIT-ML's processed copy is distributed by the same authors. This
# script downloads nothing and deletes nothing; it checks each root and prints what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source prepare/_gdrive.sh
HML="${1:-dataset/HumanML3D}"
KIT="${2:-dataset/KIT-ML}"

status=0
for pair in "humanml3d:$HML" "kit:$KIT"; do
  ds="${pair%%:*}"; root="${pair#*:}"
  if "$PY" -m prepare.verify_assets dataset "$root" --dataset "$ds"; then continue; fi
  status=1
  cat >&2 <<MSG
download_datasets: $ds is not at $root. It cannot be fetched automatically:
  - HumanML3D: request AMASS (amass.is.tue.mpg.de), then run the HumanML3D repository's
    raw_pose_processing / motion_representation / cal_mean_variance steps (use matplotlib 3.3.4:
    other versions change the features, pitfall 4), and place the result at $root
    (new_joint_vecs/, new_joints/, texts/, Mean.npy, Std.npy, train/val/test/train_val/all.txt).
  - KIT-ML: take the processed KIT-ML folder linked from the HumanML3D repository README
    and place it at $root in the same layout (251-d features, 21 joints).
  Point dataset_root in configs/<dataset>/*.yaml at it if you use another path.
  Offline, everything runs on SynthML: python -m data.synth --out DIR --num 3000 --seed 0
MSG
done
exit "$status"
