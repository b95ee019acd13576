#!/usr/bin/env bash
# Create .venv in the repository root and install everything. Idempotent: a fast no-op when the
# installed requirements already match requirements.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
STAMP=".venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [[ -x .venv/bin/python && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
pip_install() {
  # a machine's pip config may name local package folders that do not exist: pip warns once per
  # package about each; keep every other message
  .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v "^WARNING: Location 'file://.*is ignored" >&2)
}
pip_install --upgrade pip
# torch first and exactly: an unpinned torch pulls a multi-GB CUDA build.
pip_install "torch==2.13.0"
pip_install -r requirements.txt
echo "$want" > "$STAMP"
echo "setup: .venv ready"
