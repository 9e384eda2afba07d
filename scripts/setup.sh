#!/usr/bin/env bash
# Set up everything dragnb needs in ./.venv; idempotent (re-runs only when pyproject.toml changes).
#   TORCH_SPEC   torch requirement (default torch==2.13.0: the CPU wheel on this machine; e.g. "torch" elsewhere)
#   PYTHON       interpreter for the venv (default python3; 3.10-3.12)
#   --browser    also install Debian's chromium for the browser test (needs root / apt)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.dragnb-installed
want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing $TORCH_SPEC and dragnb[dev] into .venv"
  # torch first and pinned, so nothing below can pull a multi-GB CUDA build.
  .venv/bin/pip install --quiet "$TORCH_SPEC"
  .venv/bin/pip install --quiet -e ".[dev]"
  if .venv/bin/pip show onnxruntime >/dev/null 2>&1; then
    echo "[setup] plain onnxruntime is installed beside onnxruntime-training-cpu; they overwrite each other" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  echo "[setup] installing Debian's chromium for the browser test"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, onnxruntime, onnx; print("torch", torch.__version__, "| onnxruntime", onnxruntime.__version__, "| onnx", onnx.__version__)')"
