"""What the tests of Resonate's SDKs share: the Python SDK's interpreter, node and the
TypeScript SDK's modules."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.served import REPO

SDK_PYTHON = REPO / ".tools" / "resonate-py" / "bin" / "python"
SDK_MODULES = REPO / ".tools" / "resonate-ts" / "node_modules"
RUN_TIMEOUT = 60.0
"""Seconds an SDK client process may take to print its answer."""


async def answer_of(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run an SDK client process: the JSON line it prints last. Fails naming it if it
    exits with an error or prints nothing within ``RUN_TIMEOUT`` seconds."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    shown = " ".join(Path(a).name if i < 2 else a for i, a in enumerate(argv))
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{shown}: no answer in {RUN_TIMEOUT} s") from None
    assert process.returncode == 0, f"{shown}: {err.decode(errors='replace')}"
    answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return answer


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
