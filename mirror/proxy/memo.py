"""In-process memory of work: shared in-flight work, and immutable bytes by digest."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from mirror.reference import Digest


class SingleFlight:
    """Runs one coroutine per key at a time; concurrent callers share its result.

    The shared work is shielded, so a caller that goes away does not cancel it for others.
    """

    def __init__(self) -> None:
        self._running: dict[Any, asyncio.Task] = {}

    def running(self, key: Any) -> bool:
        """Whether a caller of `run(key, ...)` now would join work already running."""
        return key in self._running

    async def run(self, key: Any, work: Callable[[], Awaitable[Any]]) -> Any:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(task)


class ManifestMemory:
    """Manifest bytes by digest, bounded in total size. Safe because content by digest is
    immutable; it spares a filesystem read on the hottest path."""

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._used = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, digest: Digest) -> bytes | None:
        body = self._items.get(digest.hex)
        if body is not None:
            self._items.move_to_end(digest.hex)
        return body

    def put(self, digest: Digest, body: bytes) -> None:
        if len(body) > self._budget or digest.hex in self._items:
            return
        self._items[digest.hex] = body
        self._used += len(body)
        while self._used > self._budget:
            _, old = self._items.popitem(last=False)
            self._used -= len(old)
