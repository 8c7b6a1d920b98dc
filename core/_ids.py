"""The id grammar: invocation, call and schedule ids (pure: no IO).

An invocation's id is the user's, without ``:``. The calls it makes get ids by position:
the first call of invocation ``a`` is ``a:1``, the first call of that call's own durable
function ``a:1.1``, and so on, so a replay that makes the same calls finds the same ids. A
schedule's slot at ``t`` (epoch ms) is invocation ``{schedule id}.{t}``.
"""

from __future__ import annotations

__all__ = [
    "CALL_SEPARATOR",
    "MAX_ID_LENGTH",
    "MAX_PATTERN_LENGTH",
    "MAX_SCHEDULE_ID_LENGTH",
    "check_id_pattern",
    "check_invocation_id",
    "check_promise_id",
    "check_schedule_id",
    "child_id",
    "glob_match",
    "id_order",
    "parent_of",
    "root_of",
]

CALL_SEPARATOR = ":"
"""Separates an invocation's id from the positions of its calls; no user id contains it."""
MAX_ID_LENGTH = 512
MAX_SCHEDULE_ID_LENGTH = 480
"""Room for a slot's suffix (``.`` and epoch ms) within an invocation id's 512 characters."""


def _check_id(id: object, what: str, max_length: int) -> str:
    if not isinstance(id, str) or not id:
        raise ValueError(f"{what} must be a non-empty string, got {id!r}")
    if CALL_SEPARATOR in id:
        raise ValueError(f"{what} {id!r} may not contain ':' (reserved for call ids)")
    if id in (".", ".."):
        raise ValueError(f"{what} {id!r} is not an id: a URL path cannot hold it")
    if len(id) > max_length:
        raise ValueError(f"{what} {id[:40]!r}... is longer than {max_length} characters")
    if not id.isascii():
        try:
            id.encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"{what} {id[:40]!r} is not valid Unicode text (a lone surrogate)"
            ) from None
    return id


MAX_PATTERN_LENGTH = 2 * MAX_ID_LENGTH
"""An id pattern's characters at most: an id's, and as many ``*``."""


def check_id_pattern(pattern: object) -> str:
    """``pattern`` if it can search ids (``*`` matches any run), else ``ValueError``."""
    if not isinstance(pattern, str):
        raise ValueError(f"id pattern must be a string, got {pattern!r}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"id pattern {pattern[:40]!r}... is longer than {MAX_PATTERN_LENGTH} characters"
        )
    if not pattern.isascii():
        try:
            pattern.encode()
        except UnicodeEncodeError:
            raise ValueError(f"id pattern {pattern[:40]!r} is not valid Unicode text") from None
    return pattern


def glob_match(pattern: str, text: str) -> bool:
    """Whether ``text`` matches ``pattern``, where ``*`` matches any run of characters and
    every other character only itself. No backtracking: with ``*`` the only wildcard, finding
    each piece between stars at its leftmost place after the last is enough, so the time is
    linear in ``text`` for each piece (``re`` and ``fnmatch`` backtrack: ``*a*a*a*b`` took
    exponential time)."""
    first, *middle = pattern.split("*")
    if not middle:
        return text == pattern
    last = middle.pop()
    end = len(text) - len(last)
    if end < len(first) or not text.startswith(first) or not text.endswith(last):
        return False
    at = len(first)
    for piece in middle:
        found = text.find(piece, at, end)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def check_promise_id(id: object) -> str:
    """``id`` if a promise made through the promise API can have it (not inside an
    invocation's id space: no ``:``), else ``ValueError`` saying why."""
    return _check_id(id, "promise id", MAX_ID_LENGTH)


def check_invocation_id(id: object) -> str:
    """``id`` if it can name an invocation, else ``ValueError`` saying why."""
    return _check_id(id, "invocation id", MAX_ID_LENGTH)


def check_schedule_id(id: object) -> str:
    """``id`` if it can name a schedule, else ``ValueError`` saying why."""
    return _check_id(id, "schedule id", MAX_SCHEDULE_ID_LENGTH)


def child_id(parent: str, position: int) -> str:
    """The id of call number ``position`` (from 1) made by the durable function ``parent``."""
    return f"{parent}{'.' if CALL_SEPARATOR in parent else CALL_SEPARATOR}{position}"


def root_of(id: str) -> str:
    """The root invocation's id of any call id."""
    return id.partition(CALL_SEPARATOR)[0]


def parent_of(id: str) -> str | None:
    """The id of the durable function that made call ``id`` (None for a root)."""
    head, separator, tail = id.rpartition(CALL_SEPARATOR)
    if not separator:
        return None
    return id.rpartition(".")[0] if "." in tail else head


def id_order(id: str) -> list[tuple[int, int, str]]:
    """Sort key putting ``a:2`` before ``a:10`` (numbers by value, other parts by text)."""
    head, _, tail = id.partition(CALL_SEPARATOR)
    parts = [head, *tail.split(".")] if tail else [head]
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]
