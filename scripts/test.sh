#!/usr/bin/env bash
# One command: set everything up (venv, pinned packages, Debian chromium), lint, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
.venv/bin/ruff check .
# Notebook kernels and the browser test use this venv's python.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/pytest -q -ra "$@"
