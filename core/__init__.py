"""The pure core: the promise, task and schedule state machines, retry policies, the id
grammar, the call records in promise params, placement and the error classes.

Nothing here does IO or reads a clock (``now`` is an argument), and nothing imports the
rest of dawait: tests/unit/test_layers.py checks both.
"""

from __future__ import annotations

__all__: list[str] = []
