"""The aiohttp application factory: builds every subsystem from one config."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from mirror.config import Config
from mirror.proxy.blob_fills import remove_leftovers
from mirror.proxy.handlers import SERVICE, add_routes, add_site_routes, error_middleware
from mirror.proxy.service import ProxyService, running_service

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
_STATS_FLUSH_SECONDS = 5.0
_STATS_EXPORT_EVERY = 12  # flushes: once a minute
_CLEAN_EVERY = 120  # flushes: every ten minutes


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[CONFIG] = config
    app.cleanup_ctx.append(_proxy_service)
    add_routes(app)
    if config.catalog.serve:
        add_site_routes(app, config.catalog.out)
    return app


async def _proxy_service(app: web.Application) -> AsyncIterator[None]:
    """The service lives exactly as long as the app, with its housekeeping beside it."""
    async with running_service(app[CONFIG]) as service:
        app[SERVICE] = service
        flusher = asyncio.ensure_future(_housekeeping(service))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher


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


def serve(config: Config, workers: int = 1, access_log: bool = True) -> None:
    """Run the proxy until SIGTERM/SIGINT: in this process, or in `workers` processes
    sharing the port (SO_REUSEPORT) so one node uses every core. The workers share the
    cache like any instances do (one fill per blob, via the store)."""
    if workers <= 1:
        _run(config, reuse_port=False, access_log=access_log)
        return
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().level
    processes = [
        context.Process(target=_worker, args=(config, level, access_log), name=f"mirror-worker-{n}")
        for n in range(workers)
    ]
    for process in processes:
        process.start()

    def stop(signum: int, frame: object) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for process in processes:
        process.join()


def _worker(config: Config, level: int, access_log: bool) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    _run(config, reuse_port=True, access_log=access_log)


def _run(config: Config, reuse_port: bool, access_log: bool) -> None:
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        print=None,
        reuse_port=reuse_port,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        access_log_format='%a "%r" %s %Tfs',
    )
