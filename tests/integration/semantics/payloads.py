"""The user's types these tests pass through the codec and record as errors. Module level
and importable by name: the codec resolves annotations in their module, and a recorded
error is looked up by its qualified name."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pydantic

PLACED = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
PAYMENT = uuid.UUID("12345678-1234-5678-1234-567812345678")


@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    amount: int
    placed_at: dt.datetime


class Receipt(pydantic.BaseModel):
    order_id: str
    payment_id: uuid.UUID
    charged_at: dt.datetime
    items: list[str]


class OutOfStockError(Exception):
    """A user's exception type, importable from this module."""


class Outer:
    class NestedError(Exception):
        """An exception type nested in a class."""
