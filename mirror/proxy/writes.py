"""Which repository a write (an upload, a manifest PUT or DELETE) names, and whether the
caller may write there: only the local namespace takes writes, and only from its writers."""

from __future__ import annotations

from aiohttp import web

from mirror.errors import Unsupported
from mirror.proxy.access_gate import GATE, Caller
from mirror.proxy.served import served
from mirror.proxy.service import ProxyService
from mirror.reference import Repository


async def writable_repository(
    request: web.Request, service: ProxyService
) -> tuple[Repository, Caller]:
    """The repository of the path and who writes to it, once the gate let them (`401`,
    `403 DENIED`); `405 UNSUPPORTED` saying where pushes go for any other repository."""
    router = service.router
    repo = router.route(request.match_info["name"], request.query.get("ns"))
    served(request).upstream = service.upstream_name(repo)
    gate = request.app.get(GATE)
    if not router.is_local(repo) or gate is None:  # [local] needs [auth]: no gate, no local
        if router.local_prefix:
            raise Unsupported(
                f"{repo} is read-only: pushes go to {router.local_prefix}/<user or group>/<name>"
            )
        raise Unsupported("pushes are off: this mirror has no [local] prefix")
    return repo, await gate.check_push(request, repo)
