#!/usr/bin/env bash
# Install into .venv and run a dawait node serving the example app (examples/app.py) on the
# embedded SQLite store (./.dawait/dawait.db), at http://127.0.0.1:8080. Extra args go to
# `dawait serve` (e.g. --port 9000 --token secret). Stop it with Ctrl-C (graceful).
#
# It installs what the node needs (`pip install -e .`: the runtime dependencies, not the
# [dev] extras, which scripts/check.sh adds), and only when .venv's install stamp does not
# match pyproject.toml and the venv's Python: a restart with nothing changed starts at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The stamp (shared with scripts/check.sh): the extras installed, the Python version, and
# pyproject.toml's hash. A [dev] install (check.sh) holds everything the node needs too.
STAMP=.venv/.dawait-install-stamp
key="$(.venv/bin/python -c 'import sys; print(sys.version.split()[0])') $(sha256sum pyproject.toml | cut -d' ' -f1)"
stamp="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$stamp" != "runtime $key" ] && [ "$stamp" != "dev $key" ] || [ ! -x .venv/bin/dawait ]; then
  rm -f "$STAMP"
  .venv/bin/python -m pip install --quiet -e .
  echo "runtime $key" >"$STAMP"
fi
exec .venv/bin/dawait serve --app examples.app:app "$@"
