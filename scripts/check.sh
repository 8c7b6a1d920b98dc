#!/usr/bin/env bash
# The project's one check: install into .venv, then lint, format check, mypy --strict, tests.
# This is the README's test command, and .ci/run calls it. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "== ruff check";  .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy";        ./scripts/typecheck.sh
echo "== pytest";      .venv/bin/pytest "$@"
