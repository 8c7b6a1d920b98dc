"""The HTTP client (node/_client.py) against sockets that misbehave."""

from __future__ import annotations

import asyncio

import pytest

from dawait.errors import NotStartedError
from dawait.node._client import HttpClient


async def test_a_node_that_never_answers_is_named_with_the_timeout() -> None:
    """Accepted, never answered: the error says how long the client waited, not an empty
    'cannot reach'."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with HttpClient(f"http://127.0.0.1:{port}", timeout=0.5) as client:
            with pytest.raises(NotStartedError) as raised:
                await client.start("x", "f", [], {})
        assert (
            str(raised.value) == f"no answer from the node at http://127.0.0.1:{port} within 0.5 s"
        )
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
