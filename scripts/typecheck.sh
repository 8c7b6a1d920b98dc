#!/usr/bin/env bash
# mypy --strict on the package as it installs: sdk/ is `dawait`, and core/, runtime/,
# cluster/ and node/ are `dawait.core`, `dawait.runtime`, `dawait.cluster` and `dawait.node`.
# mypy cannot follow setuptools' package-dir mapping, so this lays the same tree out with
# symlinks under build/typecheck and checks `-p dawait` there.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/dawait
rm -rf build/typecheck
mkdir -p "$tree"
for f in sdk/*.py sdk/py.typed; do ln -s "../../../$f" "$tree/$(basename "$f")"; done
for pkg in core runtime cluster node; do ln -s "../../../$pkg" "$tree/$pkg"; done
MYPYPATH=build/typecheck "${PYTHON_BIN:-.venv/bin}/mypy" --strict -p dawait "$@"
# The public API as a user's code sees it (assert_type checks, never run).
MYPYPATH=build/typecheck exec "${PYTHON_BIN:-.venv/bin}/mypy" --strict tests/typing/public_api.py
