"""Which invocations a listing asks for, and where a page of them ended (pure: no IO).

Every store lists invocations newest first: by creation time descending, then by id
(``listing_order``), so that a page's cursor, ``"{created_at}/{id}"`` of its last record,
says where the next one starts whatever was created since. The filters a store cannot
apply in its index are applied here, to each record as of the listing's ``now``
(``InvocationQuery.keeps``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dawait.core._param import call_target
from dawait.core._promise import PromiseRecord, PromiseState

__all__ = [
    "FAILED",
    "InvocationQuery",
    "ListCursor",
    "decode_cursor",
    "encode_cursor",
    "listed_after",
    "listing_order",
    "parse_states",
]

FAILED = frozenset(
    {PromiseState.REJECTED, PromiseState.REJECTED_CANCELED, PromiseState.REJECTED_TIMEDOUT}
)
"""Every way an invocation can fail: the states the word ``failed`` stands for."""

_WORDS: dict[str, frozenset[PromiseState]] = {
    "failed": FAILED,
    "canceled": frozenset({PromiseState.REJECTED_CANCELED}),
    "timedout": frozenset({PromiseState.REJECTED_TIMEDOUT}),
    **{state.value: frozenset({state}) for state in PromiseState},
}


def parse_states(text: str) -> frozenset[PromiseState]:
    """The states a comma-separated list of words names (``failed``, ``pending,canceled``);
    ValueError naming the words it takes, if one is none of them."""
    states: set[PromiseState] = set()
    for word in (w.strip() for w in text.split(",")):
        if word not in _WORDS:
            known = ", ".join(_WORDS)
            raise ValueError(f"{word!r} is not a state: use one or more of {known}")
        states |= _WORDS[word]
    return frozenset(states)


ListCursor = tuple[int, str]
"""Where a page ended: the (created_at, id) of its last record."""


def listing_order(record: PromiseRecord) -> tuple[int, str]:
    """Sorts a listing: newest first, then by id."""
    return -record.created_at, record.id


def listed_after(record: PromiseRecord, cursor: ListCursor | None) -> bool:
    """Whether ``record`` comes after the page that ended at ``cursor``."""
    return cursor is None or listing_order(record) > (-cursor[0], cursor[1])


def encode_cursor(at: ListCursor) -> str:
    return f"{at[0]}/{at[1]}"


def decode_cursor(text: str) -> ListCursor:
    """ValueError if ``text`` is not a cursor a listing gave."""
    created, slash, id = text.partition("/")
    if not slash or not created.isdigit():
        raise ValueError(f"{text!r} is not a cursor a listing gave")
    return int(created), id


@dataclass(frozen=True, kw_only=True)
class InvocationQuery:
    """What a listing of invocations keeps; every field left unset keeps all."""

    states: frozenset[PromiseState] | None = None
    """As of the listing's time: a pending invocation past its deadline counts as timed out."""
    function: str | None = None
    """A prefix of the function's name (``shop.`` keeps every function of ``shop``)."""
    created_after: int | None = None
    """Epoch ms, inclusive."""
    created_before: int | None = None
    """Epoch ms, exclusive."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags the invocation carries, each with that value."""

    def created_within(self, created_at: int) -> bool:
        return (self.created_after is None or created_at >= self.created_after) and (
            self.created_before is None or created_at < self.created_before
        )

    def names(self, function: str | None) -> bool:
        return self.function is None or (function or "").startswith(self.function)

    def keeps(self, record: PromiseRecord) -> bool:
        """Whether ``record`` (as of the listing's time, see ``expire_promise``) is listed."""
        return (
            (self.states is None or record.state in self.states)
            and self.created_within(record.created_at)
            and self.names(call_target(record.param.data)[0])
            and all(record.tags.get(k) == v for k, v in self.tags.items())
        )

    def stored_states(self) -> frozenset[PromiseState] | None:
        """The stored states that may be listed: a stored pending one may have timed out."""
        if self.states is None or PromiseState.REJECTED_TIMEDOUT not in self.states:
            return self.states
        return self.states | {PromiseState.PENDING}
