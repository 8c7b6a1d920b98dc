"""Retention: how long a settled root is kept before it is deleted with its tree (pure).

A root (an invocation, or a promise that is nobody's call) gets its retention when it is
created, as the tag ``TAG_RETENTION`` in milliseconds; once it settles, its
``PromiseRecord.delete_at`` is that much after ``settled_at``, and the engine's sweep
deletes it then (runtime/_retention.py).
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from typing import Final

__all__ = [
    "APP_RETENTION",
    "DEFAULT_RETENTION",
    "AppRetention",
    "check_retention",
    "parse_retention",
]

DEFAULT_RETENTION: Final = 7 * 24 * 3600.0
"""Seconds a settled invocation or promise is kept by default: 7 days (Temporal's CLI keeps
closed workflows 3 days, Restate 1 day, Hatchet 30 days)."""

_MAX_SECONDS = 100 * 365 * 24 * 3600.0


class AppRetention(enum.Enum):
    APP = "app"


APP_RETENTION: Final = AppRetention.APP
"""A function's retention when it names none: the app's."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_FOREVER = "forever"


def check_retention(value: object, what: str) -> float | None:
    """Seconds from ``value`` (seconds, a ``timedelta``, or None to keep forever); a clear
    error naming ``what`` otherwise."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{what}: expected seconds, a timedelta or None (keep forever), got {value!r}"
        )
    if not math.isfinite(seconds) or seconds <= 0 or seconds > _MAX_SECONDS:
        raise ValueError(
            f"{what}: retention must be more than 0 and at most 100 years, got {value!r} "
            "(None keeps forever)"
        )
    if seconds < 0.001:
        raise ValueError(f"{what}: retention must be at least 1 ms, got {value!r}")
    return seconds


def parse_retention(text: str) -> float | None:
    """Seconds from a retention written for people, as ``dawait serve --retention`` takes
    it: a number with a unit (``500ms``, ``90s``, ``30m``, ``24h``, ``7d``, ``2w``; none:
    seconds), or ``forever`` (None)."""
    spelled = text.strip().lower()
    if spelled == _FOREVER:
        return None
    match = _DURATION.fullmatch(spelled)
    if match is None:
        raise ValueError(
            f"retention {text!r}: expected a number with a unit (500ms, 90s, 30m, 24h, 7d, "
            "2w) or 'forever'"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return check_retention(seconds, f"retention {text!r}")
