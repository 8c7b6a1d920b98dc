"""The ``store`` fixture: each contract test runs against the memory store, a SQLite file
and etcd (the session's member, or ``DAWAIT_TEST_ETCD``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dawait.cluster._etcd_store import EtcdStore
from dawait.runtime import MemoryStore, SQLiteStore, Store

_namespaces = itertools.count()


@pytest.fixture(params=["memory", "sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store: Store
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "s.db")
    else:
        endpoints = os.environ.get("DAWAIT_TEST_ETCD") or request.getfixturevalue("etcd").endpoints
        store = EtcdStore(endpoints, namespace=f"contract{next(_namespaces)}-{os.getpid()}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()
