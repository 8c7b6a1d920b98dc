from __future__ import annotations

import pytest

from dawait.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
