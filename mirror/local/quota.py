"""`[local] quota`: how many bytes a namespace of the local registry holds, and whether a
push may add more.

A namespace's use is the size of every distinct blob and manifest linked to any of its
repositories: a layer shared by two of its images counts once; one that another namespace
(or the cache of an upstream) also holds counts in each namespace that links it, though
the disk holds it once. Use is read from the link files, remembered per process for a few
seconds, so concurrent pushes (here or on other instances) can overshoot the quota by at
most the uploads in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from mirror.cache.store import ContentStore
from mirror.config import LocalConfig
from mirror.errors import QuotaExceeded
from mirror.reference import Digest, Repository
from mirror.units import human_size

_USE_TTL_SECONDS = 5.0  # how long one walk of a namespace's links is reused


@dataclass(frozen=True, slots=True)
class NamespaceUse:
    """What a namespace holds: its name (`<prefix>/<namespace>`), its bytes, its digests."""

    namespace: str
    size: int
    digests: frozenset[Digest]


def _key(repo: Repository) -> tuple[str, str]:
    """(local prefix, user or group): which namespace's use `repo` counts in."""
    return repo.prefix, LocalConfig.owner_of(repo)


class NamespaceQuota:
    """The quota of every local namespace (None: no limit)."""

    def __init__(
        self,
        store: ContentStore,
        limit: int | None,
        executor: Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._store = store
        self._executor = executor
        self._clock = clock
        self._uses: dict[tuple[str, str], tuple[float, NamespaceUse]] = {}

    async def use(self, repo: Repository) -> NamespaceUse:
        """The use of `repo`'s namespace, walked in a worker thread unless walked lately."""
        key = _key(repo)
        remembered = self._uses.get(key)
        if remembered is not None and self._clock() - remembered[0] < _USE_TTL_SECONDS:
            return remembered[1]
        loop = asyncio.get_running_loop()
        use = await loop.run_in_executor(self._executor, self._measure, key)
        self._uses[key] = (self._clock(), use)
        return use

    async def check(
        self, repo: Repository, adding_bytes: int, digest: Digest | None = None
    ) -> None:
        """Raise `QuotaExceeded` when adding `adding_bytes` (of blob or manifest `digest`,
        which adds nothing if the namespace holds it already) would pass the quota."""
        if self.limit is not None:
            self.refuse_over(await self.use(repo), adding_bytes, digest)

    def refuse_over(
        self, use: NamespaceUse, adding_bytes: int, digest: Digest | None = None
    ) -> None:
        """`check` against a use read before (while the bytes of an upload arrive)."""
        if self.limit is None or (digest is not None and digest in use.digests):
            return
        if use.size + adding_bytes > self.limit:
            raise QuotaExceeded(
                f"namespace {use.namespace} is over its quota: it holds {human_size(use.size)} "
                f"of {human_size(self.limit)}, and this push adds {human_size(adding_bytes)}"
            )

    def forget(self, repo: Repository) -> None:
        """Walk `repo`'s namespace again next time (after this process added to it)."""
        self._uses.pop(_key(repo), None)

    def _measure(self, key: tuple[str, str]) -> NamespaceUse:
        digests = frozenset(self._store.namespace_links(*key))
        size = sum(self._store.blob_size(digest) or 0 for digest in digests)
        return NamespaceUse("/".join(key), size, digests)
