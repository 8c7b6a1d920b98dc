"""Fixtures of the semantics tests: a store URL of each kind, and an app on memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dawait import Resonate
from tests.integration.semantics.support import sqlite_url


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else sqlite_url(tmp_path)


@pytest.fixture
async def app() -> AsyncIterator[Resonate]:
    async with Resonate(evict_after=60) as app:
        yield app
