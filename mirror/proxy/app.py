"""The aiohttp application factory: builds every subsystem from one config."""

from __future__ import annotations

import asyncio
import errno
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from mirror.access.tokens import load_or_create_key
from mirror.cache.store import ContentStore
from mirror.config import Config
from mirror.errors import InvalidValue, out_of_resources
from mirror.metrics.exposition import (
    create_workers_directory,
    remove_workers_directory,
    worker_ended,
)
from mirror.proxy.access_gate import GATE, AccessGate
from mirror.proxy.access_log import AccessLog
from mirror.proxy.blob_fills import remove_leftovers
from mirror.proxy.converted import ConvertedImages
from mirror.proxy.handlers import (
    CONVERTED,
    OUT_OF_RESOURCES,
    SERVICE,
    add_routes,
    add_site_routes,
    error_middleware,
)
from mirror.proxy.health import READINESS, Readiness, add_health_routes
from mirror.proxy.lifecycle import serve_until_stopped
from mirror.proxy.listener_tls import ListenerTLS
from mirror.proxy.metrics_http import add_metrics, count_requests
from mirror.proxy.service import ProxyService, running_service
from mirror.proxy.throttled_log import ThrottledWarning
from mirror.proxy.token_endpoint import add_token_routes

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
_STATS_FLUSH_SECONDS = 5.0
_STATS_EXPORT_EVERY = 12  # flushes: once a minute
_CLEAN_EVERY = 120  # flushes: every ten minutes


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[count_requests, error_middleware])
    app[CONFIG] = config
    app[OUT_OF_RESOURCES] = ThrottledWarning(log)
    app.cleanup_ctx.append(_quiet_floods)
    app.cleanup_ctx.append(_proxy_service)
    add_health_routes(app)
    add_routes(app)
    if config.auth.enabled:
        add_token_routes(app)
    add_metrics(app, config.server)
    if config.catalog.serve:
        add_site_routes(app, config.catalog.out)
    return app


async def _quiet_floods(app: web.Application) -> AsyncIterator[None]:
    """A flood of one failure costs a few log lines, not a traceback each: accepts that fail
    for want of descriptors (asyncio retries them every second) and requests aiohttp's
    parser rejects become throttled warnings."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(functools.partial(_loop_exception, app[OUT_OF_RESOURCES]))
    server_log = logging.getLogger("aiohttp.server")
    malformed = _MalformedRequests(ThrottledWarning(log))
    server_log.addFilter(malformed)
    try:
        yield
    finally:
        server_log.removeFilter(malformed)
        loop.set_exception_handler(previous)


def _loop_exception(
    warning: ThrottledWarning, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
) -> None:
    exc = context.get("exception")
    if exc is None or not out_of_resources(exc):
        loop.default_exception_handler(context)
        return
    warning(
        "cannot accept connections: %s (open files limit %d); new clients wait until "
        "connections close, accepting is retried every second",
        errno.errorcode.get(exc.errno, exc.errno),
        resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )


class _MalformedRequests(logging.Filter):
    """Replaces aiohttp's ERROR and traceback for each request its HTTP parser rejects (the
    client got its 400) with a throttled one-line warning; everything else passes."""

    def __init__(self, warning: ThrottledWarning) -> None:
        super().__init__()
        self._warning = warning

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        # What follows a colon or a line break quotes the client's bytes: left out.
        reason = re.split(r"[:\r\n]", str(exc.message), maxsplit=1)[0].strip()[:80]
        self._warning(
            "rejected a malformed request from %s: %s (%s)", remote, reason, type(exc).__name__
        )
        return False


async def _proxy_service(app: web.Application) -> AsyncIterator[None]:
    """The service lives exactly as long as the app, with its housekeeping beside it."""
    config = app[CONFIG]
    async with running_service(config) as service:
        app[SERVICE] = service
        app[READINESS] = Readiness(service.store, service.metadata)
        app[CONVERTED] = ConvertedImages(service)
        if config.auth.enabled:
            app[GATE] = AccessGate.from_config(
                config, service.store.token_key_path(), service.router
            )
        flusher = asyncio.ensure_future(_housekeeping(service))
        measurer = asyncio.ensure_future(service.measure_store())  # for /metrics
        try:
            yield
        finally:
            flusher.cancel()
            measurer.cancel()
            await asyncio.gather(flusher, measurer, return_exceptions=True)
            await app[CONVERTED].close()
            if GATE in app:
                app[GATE].close()
            app[READINESS].close()


async def _housekeeping(service: ProxyService) -> None:
    """Pull counts into the node-local database every few seconds and published for other
    nodes once a minute; leftovers of instances that died removed every ten minutes."""
    for beat in itertools.count(1):
        await asyncio.sleep(_STATS_FLUSH_SECONDS)
        try:
            service.pulls.flush()
            if beat % _STATS_EXPORT_EVERY == 0:
                with service.store.refusals.tolerated("this node's pull statistics"):
                    service.pulls.publish()
            if beat % _CLEAN_EVERY == 0:
                await remove_leftovers(service.store, service.config.cache)
        except Exception:  # housekeeping must never take the proxy down
            log.exception("housekeeping failed")


def serve(config: Config, workers: int = 1) -> None:
    """Run the proxy until SIGTERM/SIGINT, then drain (`lifecycle`): in this process, or in
    `workers` processes sharing the port (SO_REUSEPORT) so one node uses every core. The
    workers share the cache like any instances do (one fill per blob, via the store).
    SIGHUP reloads the TLS certificate, the access log file, upstream passwords and the
    LDAP bind password; the parent of workers passes SIGTERM, SIGINT and SIGHUP on to
    each, and waits for them."""
    _raise_open_files_limit()
    _check_address_free(config.server.host, config.server.port)
    if config.auth.enabled:
        # Made or checked once here: a damaged key is one error line, not a traceback from
        # every worker's start.
        load_or_create_key(ContentStore(config.cache.root).token_key_path())
    if config.server.metrics_port:
        _check_address_free(config.server.host, config.server.metrics_port)
    opened = AccessLog.from_config(config.log)  # an unusable file: one error line, here
    if workers > 1 and opened is not None:
        opened.close()  # each worker opens its own
    # Ignored until each event loop handles it; spawned workers inherit the disposition,
    # so a SIGHUP while a worker starts cannot end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if workers <= 1:
        _run(config, reuse_port=False, access_log=opened)
        return
    metrics_dir = create_workers_directory(config.cache.index_dir)
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().level
    processes = [
        context.Process(target=_worker, args=(config, level), name=f"mirror-worker-{n}")
        for n in range(workers)
    ]
    for process in processes:
        process.start()

    def forward(signum: int, frame: object) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    _join_workers(processes, metrics_dir)
    remove_workers_directory(metrics_dir)


def _join_workers(processes: Sequence[BaseProcess], metrics_dir: Path) -> None:
    """Wait for every worker to end; the gauges of each that ends leave /metrics at once."""
    running = {process.sentinel: process for process in processes}
    while running:
        for sentinel in multiprocessing.connection.wait(list(running)):
            ended = running.pop(cast(int, sentinel))
            ended.join()
            worker_ended(metrics_dir, cast(int, ended.pid))


def _check_address_free(host: str, port: int) -> None:
    """Bind once without SO_REUSEPORT before anything starts: a port taken (by another
    program, or by another `mirror serve`, whose workers would otherwise silently share it)
    is one error line naming the address, not a traceback per worker."""
    try:
        probe = socket.create_server((host, port))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise InvalidValue(f"cannot listen on {host}:{port}: {reason}") from None
    probe.close()


def _raise_open_files_limit() -> None:
    """Every client, upstream connection and blob being served holds a descriptor: raise
    the soft limit to the hard one (workers inherit it) and say what it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit the kernel caps lower
            log.info("open files limit: %d (could not raise it to the hard limit)", soft)
            return
    log.info("open files limit: %d (the hard limit)", hard)


def _worker(config: Config, level: int) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    _run(config, reuse_port=True, access_log=AccessLog.from_config(config.log))


def _run(config: Config, reuse_port: bool, access_log: AccessLog | None) -> None:
    listener_tls = ListenerTLS.from_config(config.server)
    app = create_app(config)
    serve_until_stopped(app, config.server, listener_tls, access_log, reuse_port=reuse_port)
