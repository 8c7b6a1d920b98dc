"""``dawait serve``: one node serving an app's registered functions over HTTP.

SIGTERM or SIGINT stops it gracefully: it stops accepting requests, lets running steps
finish for up to the grace period, then stops the engine and closes the store. Nothing is
lost either way: whatever was still pending resumes when a node opens the store again.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import importlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from dawait import Resonate
from dawait.core._retention import parse_retention
from dawait.core._units import parse_size
from dawait.node._backend import NodeBackend
from dawait.node._http import NodeApi
from dawait.node._limits import Guard, Limits, quiet_accept_errors, raise_fd_limit
from dawait.node._settings import DEFAULT_STORE, ServeSettings

__all__ = ["AppLoadError", "ServeSettings", "UsageError", "load_app", "serve"]

log = logging.getLogger("dawait.serve")


class UsageError(ValueError):
    """Settings that cannot work together (``dawait serve`` exits 2 with the message)."""


class AppLoadError(ValueError):
    """``--app`` does not name a Resonate app that can be imported."""


def load_app(spec: str) -> Resonate:
    """The ``Resonate`` object named by ``MODULE:ATTR`` (the current directory is importable)."""
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot import {module_name!r}: {exc}") from exc
    if not hasattr(module, attr):
        raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}")
    app = getattr(module, attr)
    if not isinstance(app, Resonate):
        raise AppLoadError(f"{spec} is a {type(app).__name__}, not a dawait.Resonate app")
    return app


async def serve(
    settings: ServeSettings,
    *,
    app: Resonate | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a node until SIGTERM/SIGINT (or ``stop`` is set)."""
    app = app or load_app(settings.app)
    if settings.retention is not None:
        app.retention = parse_retention(settings.retention)
    if settings.etcd:
        app.join(
            settings.etcd,
            namespace=settings.namespace,
            node_id=settings.node_id,
            groups=settings.groups.split(",") if settings.groups else None,
            address=settings.advertise or f"http://{settings.host}:{settings.port}",
            lease_ttl=settings.lease_ttl,
            partitions=settings.partitions,
            compact_every=settings.etcd_compact_every,
            max_offset=settings.max_clock_offset,
        )
    else:
        _choose_store(app, settings.store)
    if settings.max_payload is not None:
        try:
            app.max_payload = parse_size(settings.max_payload)
        except ValueError as exc:
            raise UsageError(f"--max-payload: {exc}") from None
    _tune_interpreter()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    token = settings.token.get_secret_value() if settings.token else None
    fds = raise_fd_limit()
    limits = Limits.for_fds(
        fds,
        max_connections=settings.max_connections,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
    )
    log.info(
        "descriptor limit %d: at most %d connections, %d of them long-polls",
        fds,
        limits.max_connections,
        limits.max_waits,
    )
    quiet_accept_errors(loop)
    guard = Guard(limits)
    cluster_token = settings.cluster_token.get_secret_value() if settings.cluster_token else None
    if app.cluster is not None:  # peers are asked while the app opens (its clock offset)
        app.cluster.peering.peers.token = cluster_token or token
    try:
        async with app:
            backend = NodeBackend(app)
            api = NodeApi(
                backend,
                token=token,
                max_body=settings.max_body,
                cluster_token=cluster_token,
                open_metrics=settings.open_metrics,
                guard=guard,
            )
            runner = web.AppRunner(
                api.web_app(), access_log=None, shutdown_timeout=max(settings.grace_period, 0.1)
            )
            await runner.setup()
            assert runner.server is not None
            guard.install(runner.server)
            site = web.TCPSite(runner, settings.host, settings.port)
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise UsageError(_bind_failure(settings.host, settings.port, exc)) from None
            address = _address(runner, settings.host)
            log.info("dawait node serving %s on %s from %r", settings.app, address, app.store)
            if on_ready is not None:
                on_ready(address)
            await stop.wait()
            log.info("stopping: no new requests; letting running steps finish")
            backend.stop_waiting()  # long-polls answer now, with the state as it is
            api.protocol.hub.close()  # and the SDKs' poll streams end (they reconnect)
            await site.stop()
            await app.quiesce(settings.grace_period)
            await runner.cleanup()
            if api.forwarder is not None:
                await api.forwarder.close()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


def _choose_store(app: Resonate, asked: str | None) -> None:
    """Serve ``--store`` if given (saying so when the app was made with another), else the
    store the app was made with, else the default SQLite file."""
    made_with = app.local.made_with
    if asked is None:
        if made_with is not None or app.cluster is not None:  # Resonate(etcd=...) joined
            return
        asked = DEFAULT_STORE
    elif made_with is not None and made_with != asked:
        log.warning(
            "serving --store %s, not the store the app was made with (%s): invocations "
            "recorded in that one are not seen here",
            asked,
            made_with,
        )
    try:
        app.use_store(asked)
    except ValueError as exc:
        raise UsageError(f"--store: {exc}") from None


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} of {host} is in use (another dawait node?): choose another with "
            "--port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return f"port {port} of {host}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def _tune_interpreter() -> None:
    """This process is a server: keep what it loaded out of every later collection
    (``gc.freeze``) and collect the young generation less often (full collections over a
    large heap were the longest pauses measured under load: p99 and max latency), and hand
    the GIL over sooner."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 50)
    # The SQLite store's fsync thread must take the GIL back from the busy loop thread to
    # answer a commit; at the default 5 ms switch interval that wait was most of each
    # commit's latency under load (bench/sqlite_commit.py; docs/design.md).
    sys.setswitchinterval(0.0005)


def _address(runner: web.AppRunner, host: str) -> str:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return f"http://{host}:{address[1]}"
    return f"http://{host}"
