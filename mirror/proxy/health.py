"""`/healthz` (the process answers) and `/readyz` (it can serve and cache pulls now), for
HAProxy checks and systemd. Neither asks for credentials, and neither is in the access log:
a load balancer probing every two seconds would bury the requests that matter.

Ready means: the store takes a small write (a file created, written and removed in its
tmp/), the node-local metadata index takes a write, and the process is not shutting down.
The probes run in a thread of their own, bounded in time, so a hung cluster filesystem is
a `503`, never a stuck event loop; a probe still hanging from before answers `503` at once.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from mirror.cache.metadata import MetadataCache
from mirror.cache.refusals import is_refusal
from mirror.cache.store import ContentStore
from mirror.proxy.served import served

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_SECONDS = 5.0


class Readiness:
    """Whether this instance should get traffic, and if not why."""

    def __init__(self, store: ContentStore, metadata: MetadataCache) -> None:
        self._store = store
        self._metadata = metadata
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirror-readyz")
        self._probe: asyncio.Future[tuple[list[str], OSError | None]] | None = None
        self._draining = False
        self._reported: list[str] = []  # the problems last logged

    def drain(self) -> None:
        """From now on not ready: the process is shutting down."""
        self._draining = True

    async def problems(self) -> list[str]:
        """Why this instance is not ready; empty when it is."""
        if self._draining:
            return ["draining: the mirror is shutting down"]
        if self._probe is not None and not self._probe.done():
            return ["the store or the metadata index has not answered the previous probe yet"]
        self._probe = asyncio.get_running_loop().run_in_executor(self._executor, self._check)
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_SECONDS):
                problems, refusal = await asyncio.shield(self._probe)
            if refusal is not None:  # said once a minute, as for a refused fill
                self._store.refusals.refused(refusal, "a readiness probe")
        except TimeoutError:
            problems = [
                f"the store or the metadata index did not answer within "
                f"{_PROBE_TIMEOUT_SECONDS:g} s"
            ]
        self._report(problems)
        return problems

    def _check(self) -> tuple[list[str], OSError | None]:
        """Worker thread: both probes; the problems, and the store's refusal if it refused."""
        problems, refusal = [], None
        try:
            self._store.probe_writes()
        except OSError as exc:
            refusal = exc if is_refusal(exc) else None
            problems.append(f"the store does not take writes: {exc.strerror or exc}")
        try:
            self._metadata.probe()
        except Exception as exc:  # sqlite3, diskcache and OS errors alike
            problems.append(f"the metadata index is unusable: {exc}")
        return problems, refusal

    def _report(self, problems: list[str]) -> None:
        """Log when readiness changes, not per probe."""
        if problems == self._reported:
            return
        if problems:
            log.warning("not ready: %s", "; ".join(problems))
        else:
            log.info("ready again")
        self._reported = problems

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


READINESS = web.AppKey("readiness", Readiness)


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def healthz(request: web.Request) -> web.Response:
    served(request).logged = False
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    served(request).logged = False
    problems = await request.app[READINESS].problems()
    if problems:
        return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
    return web.Response(text="ready\n")
