"""What the tests of Resonate's SDKs share: the Python SDK's interpreter, node and the
TypeScript SDK's modules."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.served import REPO

SDK_PYTHON = REPO / ".tools" / "resonate-py" / "bin" / "python"
SDK_MODULES = REPO / ".tools" / "resonate-ts" / "node_modules"


@pytest.fixture(scope="module")
def sdk() -> Path:
    """The Python SDK's venv (``scripts/check.sh`` makes it); the test fails under CI without
    it, else is skipped."""
    if not SDK_PYTHON.exists():
        message = f"{SDK_PYTHON} is missing: ./scripts/check.sh installs resonate-sdk there"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SDK_PYTHON


@pytest.fixture(scope="module")
def node_js() -> str:
    found = shutil.which("node")
    missing = [
        what
        for what, there in (
            ("node", found is not None),
            (
                str(SDK_MODULES / "@resonatehq" / "sdk"),
                (SDK_MODULES / "@resonatehq" / "sdk").exists(),
            ),
            (str(SDK_PYTHON), SDK_PYTHON.exists()),
        )
        if not there
    ]
    if missing:
        message = f"missing {', '.join(missing)}: ./scripts/check.sh installs the SDKs"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert found is not None
    return found
