"""Helpers for testing workflows: a clock that jumps."""

from __future__ import annotations

from dawait.runtime._clock import FakeClock

__all__ = ["FakeClock"]
