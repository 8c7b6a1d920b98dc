"""What the tests of Resonate's SDKs share: the Python SDK's interpreter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.served import REPO

SDK_PYTHON = REPO / ".tools" / "resonate-py" / "bin" / "python"


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
