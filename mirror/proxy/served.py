"""What serving one request came to (who asked, which upstream, where the bytes came from,
how many went out), noted on the request by the gate and the handlers as they learn it and
read when the request is logged."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiohttp import web


class CacheResult(enum.StrEnum):
    """Where a blob or manifest response came from."""

    HIT = "hit"  # the store (or the manifest memory), no upstream request
    REVALIDATED = "revalidated"  # a cached tag the upstream confirmed with a HEAD
    MISS_LEADER = "miss-leader"  # fetched from the upstream for this request
    MISS_FOLLOWER = "miss-follower"  # joined a fetch or fill running for another request
    STALE = "stale"  # a cached tag served because the upstream failed
    PASS_THROUGH = "pass-through"  # streamed from the upstream uncached (the store refused)


@dataclass(slots=True)
class Served:
    user: str | None = None  # who the gate verified; None: anonymous
    upstream: str | None = None  # the upstream the repository routes to
    cache: CacheResult | None = None  # None where it does not apply
    status: int | None = None  # set once a streamed response's headers went out
    body_bytes: int | None = None  # counted by handlers that write past aiohttp (sendfile)
    logged: bool = True  # False for health probes


SERVED = web.RequestKey("served", Served)


def served(request: web.BaseRequest) -> Served:
    """The record of `request`, made on first use."""
    record = request.get(SERVED)
    if record is None:
        record = request[SERVED] = Served()
    return record
