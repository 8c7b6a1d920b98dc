"""Fixtures of the integration tests that serve nodes as processes (see served.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.served import Node, Nodes


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for a module's tests (each uses its own ids): the CLI's, the envelope fuzz."""
    started = Nodes(tmp_path_factory.mktemp("shared"))
    try:
        yield started.start_with("shared")
    finally:
        started.kill_all()
