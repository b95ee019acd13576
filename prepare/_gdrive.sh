#!/usr/bin/env bash
# Shared helpers for prepare/download_*.sh (sourced, not run). Never deletes anything the user has.

PY="${PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3

# Print how to run gdown (a command prefix) or nothing when it is not installed.
gdown_cmd() {
  if [[ -n "${GDOWN:-}" ]]; then echo "$GDOWN"; return; fi
  if command -v gdown >/dev/null 2>&1; then echo gdown; return; fi
  if "$PY" -c "import gdown" >/dev/null 2>&1; then echo "$PY -m gdown"; return; fi
}

# True when drive.google.com answers within 5 s (no network on the CPU demo machines).
have_network() {
  "$PY" - <<'PYEOF' >/dev/null 2>&1
import socket
socket.create_connection(("drive.google.com", 443), timeout=5).close()
PYEOF
}

# fetch_gdrive FILE_ID OUT_FILE : download one Google-Drive file with gdown; non-zero on failure.
fetch_gdrive() {
  local id="$1" out="$2" cmd
  cmd="$(gdown_cmd)"
  if [[ -z "$cmd" ]]; then
    echo "download: gdown is not installed (pip install gdown), cannot fetch $out" >&2
    return 2
  fi
  if [[ -z "${SKIP_NETWORK_CHECK:-}" ]] && ! have_network; then
    echo "download: no network (drive.google.com unreachable), cannot fetch $out" >&2
    return 3
  fi
  $cmd --id "$id" -O "$out" || { echo "download: gdown failed for id $id -> $out" >&2; return 4; }
  [[ -s "$out" ]] || { echo "download: $out is empty" >&2; return 4; }
}
