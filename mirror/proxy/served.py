"""What serving one request came to (who asked, which upstream, where the bytes came from,
how many went out), noted on the request by the gate and the handlers as they learn it and
read when the request is logged."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(slots=True)
class Served:
    user: str | None = None  # who the gate verified; None: anonymous
    upstream: str | None = None  # the upstream the repository routes to
    cache: str | None = None  # `series.HIT`, `FILL_LEADER`, ...; None where it does not apply
    status: int | None = None  # set once a streamed response's headers went out
    body_bytes: int | None = None  # counted by handlers that write past aiohttp (sendfile)
    received_bytes: int | None = None  # request body bytes a push stored or refused
    logged: bool = True  # False for health probes


SERVED = web.RequestKey("served", Served)


def served(request: web.BaseRequest) -> Served:
    """The record of `request`, made on first use."""
    record = request.get(SERVED)
    if record is None:
        record = request[SERVED] = Served()
    return record
