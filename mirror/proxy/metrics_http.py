"""`/metrics` over HTTP, and the count of every client request by route kind.

`/metrics` answers on the main port, or only on `[server] metrics_port` when that is set
(with `--workers N` every worker listens there too, sharing the port; whichever answers
reports the sums over all of them). It is outside the `[auth]` gate: Prometheus scrapes
without logging in, and no series names a repository, tag or user.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter, Histogram

from mirror.config import ServerConfig
from mirror.metrics import series
from mirror.metrics.exposition import CONTENT_TYPE, metrics_text, shared_directory
from mirror.proxy import handlers, token_endpoint
from mirror.proxy.served import served

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What each route's handler serves; every other path (/v2/, pushes, the catalog site,
# /metrics, unknown paths) is `other`.
_ROUTE_KINDS: dict[Callable[..., object], str] = {
    handlers.manifest: series.MANIFEST,
    handlers.blob: series.BLOB,
    handlers.tags_list: series.TAGS,
    handlers.repository_list: series.CATALOG,
    handlers.referrers: series.REFERRERS,
    handlers.blob_upload: series.UPLOAD,
    token_endpoint.token_by_get: series.TOKEN,
    token_endpoint.token_by_post: series.TOKEN,
}
_CLIENT_GONE = 499  # nginx's status for a client that hung up before its answer


def add_metrics(app: web.Application, server: ServerConfig) -> None:
    """`/metrics` on the main port, or a listener of its own on `server.metrics_port`."""
    if server.metrics_port:
        app.cleanup_ctx.append(lambda app: _metrics_listener(server))
    else:
        app.router.add_get("/metrics", metrics)


async def metrics(request: web.Request) -> web.Response:
    served(request).logged = False  # a scrape every few seconds is no request to log
    # The workers' files are read off the event loop.
    text = await asyncio.get_running_loop().run_in_executor(None, metrics_text)
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})


async def _metrics_listener(server: ServerConfig) -> AsyncIterator[None]:
    """A second listener, serving only `/metrics`, for as long as the proxy runs."""
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    # Workers share the port as they share the main one (the parent checked it was free).
    site = web.TCPSite(
        runner, server.host, server.metrics_port, reuse_port=shared_directory() is not None
    )
    try:
        await site.start()
        yield
    finally:
        await runner.cleanup()


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count each request by method, route kind and final status, and time it (a blob's
    time includes sending its body)."""
    started = time.monotonic()
    status = _CLIENT_GONE
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        status = 500  # what aiohttp answers to an exception that escapes
        raise
    finally:
        route = _ROUTE_KINDS.get(request.match_info.handler, series.OTHER)
        _requests(series.method_label(request.method), route, status).inc()
        _request_seconds(route).observe(time.monotonic() - started)


# Each request's series looked up once per label set: `labels()` costs more than `inc()`.
@functools.cache
def _requests(method: str, route: str, status: int) -> Counter:
    return series.REQUESTS.labels(method, route, str(status))


@functools.cache
def _request_seconds(route: str) -> Histogram:
    return series.REQUEST_SECONDS.labels(route)
