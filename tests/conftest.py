from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dawait.testing import FakeClock
from tests.etcd import ETCD, ETCDCTL, INSTALL, EtcdCluster


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _require_etcd() -> None:
    missing = [path for path in (ETCD, ETCDCTL) if not Path(path).is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the etcd tests need etcd 3.4; run `{INSTALL}`",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One started etcd member for the whole session (tests share it: use distinct keys)."""
    _require_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), size=1) as cluster:
        yield cluster


@pytest.fixture
def etcd3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A fresh, started 3-member etcd cluster, stopped after the test."""
    _require_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd3"), size=3) as cluster:
        yield cluster
