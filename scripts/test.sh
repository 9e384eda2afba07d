#!/usr/bin/env bash
# One command: set everything up (venv, pinned packages, Debian chromium), lint, run the whole test suite.
#   --quick   the fast loop instead: every module's tests except those marked slow (docs/testing.md)
# Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
marks=()
if [ "${1:-}" = "--quick" ]; then
  shift
  marks=(-m "not slow")
  bash scripts/setup.sh
else
  bash scripts/setup.sh --browser
fi
.venv/bin/ruff check .
# Notebook kernels and the browser test use this venv's python.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/pytest -q -ra "${marks[@]}" "$@"
