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
from .service import running_service

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
    """The service lives exactly as long as the app; pull statistics are flushed in the
    background."""
    async with running_service(app[CONFIG]) as service:
        app[SERVICE] = service
        flusher = asyncio.ensure_future(_flush_pull_stats(service.index))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher


async def _flush_pull_stats(index: MetadataIndex) -> None:
    while True:
        await asyncio.sleep(_STATS_FLUSH_SECONDS)
        try:
            index.flush_pulls()
        except Exception:  # statistics must never take the proxy down
            log.exception("could not record pull statistics")
