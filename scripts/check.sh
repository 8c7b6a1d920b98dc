#!/usr/bin/env bash
# The project's one check: install into .venv (skipped when nothing changed: see below), then
# lint, format check, mypy --strict, tests. This is the README's test command, and .ci/run
# calls it. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The install stamp (shared with scripts/run.sh): skip the install while the [dev] install
# recorded matches pyproject.toml and the venv's Python; run.sh's runtime-only one does not.
STAMP=.venv/.dawait-install-stamp
key="$(.venv/bin/python -c 'import sys; print(sys.version.split()[0])') $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "dev $key" ] || [ ! -x .venv/bin/pytest ]; then
  rm -f "$STAMP"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  echo "dev $key" >"$STAMP"
fi
# checkov (tests/k8s) pins older versions of packages the project uses: its own venv.
if [ ! -x .tools/checkov/bin/checkov ]; then
  "$PYTHON" -m venv .tools/checkov
  .tools/checkov/bin/python -m pip install --quiet --upgrade pip
  .tools/checkov/bin/python -m pip install --quiet 'checkov>=3.2,<4'
fi
# Resonate's official Python SDK (tests/integration/resonate) needs Python >= 3.12: its own
# venv, from the first 3.12+ interpreter found (pyenv's, or python3.12/3.13 on PATH).
if [ ! -x .tools/resonate-py/bin/python ] || ! .tools/resonate-py/bin/python -c 'import resonate' 2>/dev/null; then
  SDK_PYTHON="${RESONATE_PYTHON:-}"
  for candidate in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python python3.13 python3.12; do
    [ -n "$SDK_PYTHON" ] && break
    if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      SDK_PYTHON="$candidate"
    fi
  done
  if [ -z "$SDK_PYTHON" ]; then
    echo "check.sh: no Python >= 3.12 found for resonate-sdk (set RESONATE_PYTHON)" >&2
    exit 2
  fi
  echo "== resonate-sdk 0.8.1 (Python $("$SDK_PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
  rm -rf .tools/resonate-py
  "$SDK_PYTHON" -m venv .tools/resonate-py
  .tools/resonate-py/bin/python -m pip install --quiet 'resonate-sdk==0.8.1'
fi
# Resonate's official TypeScript SDK (tests/integration/resonate), with the machine's node.
if [ ! -e .tools/resonate-ts/node_modules/@resonatehq/sdk/package.json ]; then
  if ! command -v npm >/dev/null; then
    echo "check.sh: npm not found: the TypeScript SDK's tests need node and npm" >&2
    exit 2
  fi
  echo "== @resonatehq/sdk 0.11.5 (node $(node --version))"
  mkdir -p .tools/resonate-ts
  echo '{"name": "dawait-resonate-ts", "private": true, "type": "module"}' >.tools/resonate-ts/package.json
  npm install --prefix .tools/resonate-ts --no-audit --no-fund --loglevel=error '@resonatehq/sdk@0.11.5'
fi
echo "== ruff check";  .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy";        ./scripts/typecheck.sh
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  # The etcd tests run real etcd 3.4 (tests/etcd.py). The package may start its own etcd
  # service on install: stop any etcd that was not running before (no test runs yet).
  echo "== etcd (apt-get install etcd-server etcd-client)"
  before=" $(pgrep -x etcd | tr '\n' ' ' || true) "
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client
  for pid in $(pgrep -x etcd || true); do
    case "$before" in *" $pid "*) ;; *) kill "$pid" 2>/dev/null || true ;; esac
  done
fi
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && command -v apt-get >/dev/null; then
  # The clock tests step a node's wall clock with libfaketime (tests/integration/test_clock_steps.py).
  echo "== libfaketime (apt-get install faketime)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y faketime \
    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y faketime; }
fi
echo "== pytest";      .venv/bin/pytest "$@"
