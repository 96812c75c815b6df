"""The aiohttp application factory: builds every subsystem from one config."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .config import Config
from .index import MetadataIndex
from .routes import SERVICE, add_catalog_routes, add_routes, error_middleware
from .service import ProxyService
from .store import ContentStore
from .upstream import Upstreams

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
_STATS_FLUSH_SECONDS = 5.0


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[CONFIG] = config
    app.cleanup_ctx.append(_proxy_service)
    add_routes(app)
    if config.catalog.serve:
        add_catalog_routes(app, config.catalog.out)
    return app


async def _proxy_service(app: web.Application) -> AsyncIterator[None]:
    """The service and what it owns live exactly as long as the app. Nothing here contacts
    an upstream, so the proxy starts (and serves its cache) with every upstream down."""
    config = app[CONFIG]
    store = ContentStore(config.cache.root)
    index = MetadataIndex(config.cache.index_dir, store)
    async with Upstreams(config.upstreams, config.client) as upstreams:
        service = ProxyService(config, store, index, upstreams)
        app[SERVICE] = service
        flusher = asyncio.ensure_future(_flush_pull_stats(index))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await service.close()
            index.close()


async def _flush_pull_stats(index: MetadataIndex) -> None:
    while True:
        await asyncio.sleep(_STATS_FLUSH_SECONDS)
        try:
            index.flush_pulls()
        except Exception:  # statistics must never take the proxy down
            log.exception("could not record pull statistics")
