"""The life of one serving process: listen until SIGTERM or SIGINT, then drain; SIGHUP
reloads what can change under a running server.

Draining: `/readyz` answers 503 at once, the listening socket is closed (new connections
are refused, so a load balancer sends them to another instance), idle keep-alive
connections are closed, and responses in flight may finish for up to
`server.shutdown_grace_seconds`. Those still running then are cut (their handlers
cancelled, their connections closed); a second SIGTERM or SIGINT during the drain (an
operator's second Ctrl-C) cuts them at once. A second signal counts only a moment after
the first: Ctrl-C on a terminal reaches `--workers` both directly and through their
parent. The service stops last: a fill whose partial file another instance can go on
from is left to it (`BlobFill`), and the process exits 0.

aiohttp's own `shutdown_timeout` (aiohttp 3.14) is per connection and applies twice (a
wait for the handler, then one for the cancelled handler), and `run_app` runs its shutdown
in a cancelled task; so the grace is counted here, over every response at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from mirror.config import ServerConfig
from mirror.proxy.access_gate import GATE
from mirror.proxy.access_log import AccessLog, logger_class
from mirror.proxy.handlers import SERVICE
from mirror.proxy.health import READINESS
from mirror.proxy.listener_tls import ListenerTLS

log = logging.getLogger(__name__)

# After the grace: for the handlers cut to end, for aiohttp to close connections, and at
# least this long for the last bytes of finished responses to leave.
_FINISH_SECONDS = 1.0
_POLL_SECONDS = 0.05
# A stop signal this long after the first is a second one, not the same one delivered twice.
_SECOND_SIGNAL_SECONDS = 1.0


class InFlight:
    """The requests whose handlers are running: what a drain waits for, and cuts (and logs,
    as aiohttp's access logger never sees a cancelled handler)."""

    def __init__(self, access_log: AccessLog | None) -> None:
        self._handlers: set[asyncio.Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._access_log = access_log

    @property
    def count(self) -> int:
        return len(self._handlers)

    @web.middleware
    async def counting(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._idle.clear()
        started = asyncio.get_running_loop().time()
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if self._access_log is not None:
                self._access_log.write_cut(request, asyncio.get_running_loop().time() - started)
            raise
        finally:
            self._handlers.discard(task)
            if not self._handlers:
                self._idle.set()

    async def finished(self, timeout: float, hurry: asyncio.Event | None = None) -> bool:
        """Wait until no handler runs, for up to `timeout` seconds or until `hurry` is set:
        whether none does."""
        waits = [asyncio.ensure_future(self._idle.wait())]
        if hurry is not None:
            waits.append(asyncio.ensure_future(hurry.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self._idle.is_set()

    async def cut(self) -> None:
        """Cancel the handlers still running, and give them a moment to end."""
        for task in self._handlers:
            task.cancel()
        await self.finished(_FINISH_SECONDS)


def serve_until_stopped(
    app: web.Application,
    server: ServerConfig,
    listener_tls: ListenerTLS | None,
    access_log: AccessLog | None,
    *,
    reuse_port: bool,
) -> None:
    """Serve `app` on `server`'s address until SIGTERM or SIGINT, then drain and return."""
    in_flight = InFlight(access_log)
    app.middlewares.append(in_flight.counting)
    try:
        asyncio.run(_serve(app, server, listener_tls, access_log, in_flight, reuse_port))
    finally:
        if access_log is not None:
            access_log.close()


async def _serve(
    app: web.Application,
    server: ServerConfig,
    listener_tls: ListenerTLS | None,
    access_log: AccessLog | None,
    in_flight: InFlight,
    reuse_port: bool,
) -> None:
    runner = _runner(app, access_log)
    await runner.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    sockets: list[tuple[asyncio.Transport, socket.socket]] = []
    try:
        site = web.TCPSite(
            runner,
            server.host,
            server.port,
            ssl_context=listener_tls.context if listener_tls else None,
            reuse_port=reuse_port,
        )
        await site.start()
        log.info("listening on %s", site.name)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        gate = app.get(GATE)
        reload = functools.partial(
            reload_on_hangup,
            listener_tls,
            access_log,
            app[SERVICE].upstreams.reload_passwords,
            gate.reload_secrets if gate is not None else list,
        )
        loop.add_signal_handler(signal.SIGHUP, reload)
        await stop.wait()
        hurry = asyncio.Event()  # a second stop signal: cut what runs, now
        stopped_at = loop.time()

        def second_signal() -> None:
            if loop.time() - stopped_at >= _SECOND_SIGNAL_SECONDS:
                hurry.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, second_signal)
        deadline = loop.time() + server.shutdown_grace_seconds
        sockets = _client_sockets(runner)
        await _drain(runner, app, in_flight, server.shutdown_grace_seconds, hurry)
        if hurry.is_set():
            deadline = loop.time()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not the default, which ends the process
        await runner.cleanup()
    await _flushed(sockets, max(deadline, loop.time() + _FINISH_SECONDS))


def _runner(app: web.Application, access_log: AccessLog | None) -> web.AppRunner:
    """aiohttp's runner, without signal handlers of its own, writing `access_log`."""
    if access_log is None:
        return web.AppRunner(
            app, handle_signals=False, shutdown_timeout=_FINISH_SECONDS, access_log=None
        )
    return web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=_FINISH_SECONDS,
        access_log_class=logger_class(access_log),
        access_log=log,  # never written to; aiohttp calls the class only when one is given
    )


async def _drain(
    runner: web.AppRunner,
    app: web.Application,
    in_flight: InFlight,
    grace: float,
    hurry: asyncio.Event,
) -> None:
    app[READINESS].drain()
    for site in list(runner.sites):
        await site.stop()
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections end, busy ones after this
    log.info(
        "stopping: no new connections; %d responses in flight, waiting up to %g s for them",
        in_flight.count,
        grace,
    )
    if await in_flight.finished(grace, hurry):
        log.info("stopping: every response in flight finished")
    elif hurry.is_set():
        log.warning(
            "stopping: a second signal: cutting the %d responses still running now",
            in_flight.count,
        )
        await in_flight.cut()
    else:
        log.warning(
            "stopping: cutting the %d responses still running after %g s", in_flight.count, grace
        )
        await in_flight.cut()


def _client_sockets(runner: web.AppRunner) -> list[tuple[asyncio.Transport, socket.socket]]:
    """Each client connection's transport and socket (the raw one under TLS)."""
    found: list[tuple[asyncio.Transport, socket.socket]] = []
    for connection in runner.server.connections if runner.server is not None else []:
        transport = connection.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is not None and sock is not None:
            found.append((transport, sock))
    return found


async def _flushed(sockets: list[tuple[asyncio.Transport, socket.socket]], deadline: float) -> None:
    """Let the closed connections send what they still buffer (the end of a response), until
    `deadline`; then drop them. An event loop that stops first would lose those bytes."""
    loop = asyncio.get_running_loop()
    while any(sock.fileno() != -1 for _, sock in sockets) and loop.time() < deadline:
        await asyncio.sleep(_POLL_SECONDS)
    for transport, sock in sockets:
        if sock.fileno() != -1:
            transport.abort()


def reload_on_hangup(
    listener_tls: ListenerTLS | None,
    access_log: AccessLog | None,
    reload_passwords: Callable[[], list[str]],
    reload_login_secrets: Callable[[], list[str]],
) -> None:
    """SIGHUP: load the TLS certificate again, reopen the access log file, read the
    upstreams' passwords and the LDAP bind password again; one line says what happened
    (a failure has its own)."""
    done = []
    if listener_tls is not None:
        certificate = listener_tls.reload()
        done.append(
            f"reloaded TLS certificate {certificate}"
            if certificate
            else "kept the TLS certificate (see the error above)"
        )
    if access_log is not None and access_log.path is not None:
        done.append(
            f"reopened access log {access_log.path}"
            if access_log.reopen()
            else "kept writing the access log to the file open before (see the error above)"
        )
    if passwords := reload_passwords():
        done.append("upstream passwords: " + ", ".join(passwords))
    done.extend(reload_login_secrets())
    if done:
        log.info("SIGHUP: %s", "; ".join(done))
    else:
        log.info("SIGHUP: nothing to reload (no TLS certificate, access log file or password)")
