"""Run the DBOS peer workload in its own venv and subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".bench" / "dbos-venv"
WORKLOAD = Path(__file__).with_name("dbos_workload.py")


def ensure_dbos_python(*extra: str) -> str:
    """Create the DBOS venv once (latest dbos from PyPI, and the ``extra`` packages) and
    return its python."""
    python = VENV / "bin" / "python"
    imports = "; ".join(f"import {name}" for name in ("dbos", *extra))
    if not python.exists() or _run([str(python), "-c", imports]).returncode:
        VENV.parent.mkdir(parents=True, exist_ok=True)
        if not python.exists():
            _check(["python3.11", "-m", "venv", str(VENV)])
        _check([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "dbos", *extra])
    return str(python)


def run_dbos(mode: str, workflows: int) -> dict[str, Any]:
    """Run the workload once in a fresh subprocess and return its JSON report."""
    cmd = [ensure_dbos_python(), str(WORKLOAD), "--mode", mode, "--workflows", str(workflows)]
    out = _check(cmd).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _check(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = _run(cmd)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {' '.join(cmd[1:3])}")
    return proc
