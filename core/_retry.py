"""Retry policies: pure data that says how long to wait before retry number ``n``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

__all__ = ["Constant", "Exponential", "Linear", "Never", "RetryPolicy"]


class RetryPolicy(Protocol):
    """How often, and after what delay, a failed call is tried again."""

    def backoff(self, retry: int) -> float | None:
        """Seconds to wait before retry number ``retry`` (1-based), or None to give up."""
        ...


class _Validated:
    __slots__ = ()

    def __post_init__(self) -> None:
        for field in fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if value < 0:
                raise ValueError(f"{type(self).__name__}: {field.name} must be >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class Exponential(_Validated):
    """``delay * factor**(retry-1)`` seconds, capped at ``max_delay``; the default for steps."""

    delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    max_retries: int = 30

    def backoff(self, retry: int) -> float | None:
        if retry > self.max_retries:
            return None
        try:
            grown = self.delay * self.factor ** (retry - 1)
        except OverflowError:
            grown = float("inf")
        return float(min(grown, self.max_delay))


@dataclass(frozen=True, slots=True)
class Linear(_Validated):
    """``delay * retry`` seconds before each retry."""

    delay: float = 1.0
    max_retries: int = 30

    def backoff(self, retry: int) -> float | None:
        return None if retry > self.max_retries else self.delay * retry


@dataclass(frozen=True, slots=True)
class Constant(_Validated):
    """The same ``delay`` before each retry."""

    delay: float = 1.0
    max_retries: int = 30

    def backoff(self, retry: int) -> float | None:
        return None if retry > self.max_retries else self.delay


@dataclass(frozen=True, slots=True)
class Never:
    """No retries: the first failure is final."""

    def backoff(self, retry: int) -> float | None:
        return None
