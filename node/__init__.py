"""A dawait node: the HTTP API (``dawait serve``), its views, OpenAPI document and metrics,
the ``dawait`` CLI, and the HTTP client (``Resonate(url=...)``). One node on SQLite and
every node of a cluster serve the same API."""

from __future__ import annotations

__all__: list[str] = []
