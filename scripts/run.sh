#!/usr/bin/env bash
# Install into .venv and run a dawait node serving the example app (examples/app.py) on the
# embedded SQLite store (./.dawait/dawait.db), at http://127.0.0.1:8080. Extra args go to
# `dawait serve` (e.g. --port 9000 --token secret). Stop it with Ctrl-C (graceful).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[dev]'
exec .venv/bin/dawait serve --app examples.app:app "$@"
