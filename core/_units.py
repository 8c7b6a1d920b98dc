"""Sizes as people write them: ``262144``, ``256KiB``, ``2MiB``, ``1GiB``."""

from __future__ import annotations

__all__ = ["format_size", "parse_size"]

_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str) -> int:
    """``text`` as bytes; ``ValueError`` naming it."""
    number = text.strip().rstrip("BbIiKkMmGg")
    unit = text.strip()[len(number) :].lower()
    if not number.isdigit() or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: expected bytes, or a number and KiB, MiB, GiB")
    return int(number) * _UNITS[unit]


def format_size(size: int) -> str:
    """``size`` bytes the way ``parse_size`` reads it back, in the largest whole unit."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size:,} bytes"
