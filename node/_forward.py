"""Forwarding: a start sent to a node that is not the invocation's owner is passed, as it
came, to the owner over HTTP, so the invocation starts where it runs (at once, without the
owner reading it back from etcd).

Peers authenticate with the cluster token (``--cluster-token``; the API token when none is
set) and mark the request ``X-Dawait-Forwarded``, which a node never forwards again. When
the owner cannot be reached (refused, no connection within ``CONNECT_TIMEOUT``) the
receiving node asks the partition's owner through the peer route instead, which follows
ownership as it moves. When the owner took the request but gives no answer within the wait
and ``ANSWER_SLACK`` (a frozen or overloaded process: the kernel accepts connections for a
stopped one), the receiving node answers 503 ``unavailable`` with ``Retry-After``: the
start may or may not have been taken, and since a start is idempotent by id the client
sends it again (once the owner's lease ends its partitions move and the retry goes through).
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from dawait.cluster._etcd_records import Member

__all__ = ["FORWARDED", "NODE", "Forwarder"]

log = logging.getLogger("dawait.forward")

FORWARDED = "X-Dawait-Forwarded"
"""Request header: this request was forwarded by a peer (handle it here)."""
NODE = "X-Dawait-Node"
"""Response header: the node that handled the request."""

CONNECT_TIMEOUT = 2.0
"""Seconds to reach the owner before asking through the peer route instead."""
ANSWER_SLACK = 2.0
"""Seconds past a start's wait that the owner has to answer it, else 503."""


class Forwarder:
    def __init__(self, token: str | None) -> None:
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(
        self, request: web.Request, owner: Member, wait: float
    ) -> web.Response | None:
        """The owner's response to ``request``, or None if the owner cannot be reached."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {FORWARDED: "1", "Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        timeout = aiohttp.ClientTimeout(total=wait + ANSWER_SLACK, sock_connect=CONNECT_TIMEOUT)
        try:
            async with self._session.request(
                request.method,
                owner.address + request.rel_url.path_qs,
                data=await request.read(),
                headers=headers,
                timeout=timeout,
            ) as response:
                body = await response.read()
                if response.status in (401, 502, 503):
                    log.warning(
                        "%s answered %s to a forwarded start: %s",
                        owner.node_id,
                        response.status,
                        body[:200],
                    )
                    return None
                forwarded = web.Response(
                    body=body, status=response.status, content_type="application/json"
                )
                forwarded.headers[NODE] = response.headers.get(NODE, owner.node_id)
                return forwarded
        except aiohttp.ConnectionTimeoutError as exc:
            log.warning("cannot forward to %s at %s: %r", owner.node_id, owner.address, exc)
            return None
        except TimeoutError:
            log.warning("%s took a forwarded start and did not answer it", owner.node_id)
            message = (
                f"the owner of this invocation, node {owner.node_id}, did not answer within "
                f"{wait + ANSWER_SLACK:g} s; retry (a start is idempotent by id)"
            )
            return web.json_response(
                {"error": "unavailable", "message": message},
                status=503,
                headers={"Retry-After": "1"},
            )
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("cannot forward to %s at %s: %r", owner.node_id, owner.address, exc)
            return None
