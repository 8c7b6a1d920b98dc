#!/usr/bin/env bash
# Install into .venv and run the example app on the embedded SQLite store (./.dawait/).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[dev]'
exec .venv/bin/python examples/order_processing.py "$@"
