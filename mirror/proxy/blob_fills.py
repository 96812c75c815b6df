"""Blobs for the proxy: from the cache, or filled from the upstream once across every instance.

A blob is served to a repository only if one of its cached manifests names it or its
upstream confirms it has it (a HEAD, asked once however many clients wait, or the GET of
the fill itself). A miss claims the blob's shared partial file in the store: the instance
holding the claim downloads it once (one `BlobFill` that every local client reads along)
and touches the file as a heartbeat; other instances follow the file as it grows, and take
the fill over when the heartbeat stops, resuming from where it ended.

When the store refuses a blob (its filesystem is full, over quota or failing), every client
gets it streamed from the upstream without caching (`PassThroughBlob`, one upstream GET per
client), including clients already part-way through the fill; the next miss tries the
store again, so caching resumes by itself once there is space.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import NamedTuple

from aiohttp import ClientResponse

from mirror.cache.metadata import MetadataCache
from mirror.cache.refusals import raising_store_refused
from mirror.cache.siftree import SifTree
from mirror.cache.store import BlobWriter, ContentStore
from mirror.cache.usage import StoreUsage
from mirror.config import CacheConfig, Config
from mirror.errors import BlobUnknown, MirrorError, StoreRefused, UpstreamBadGateway
from mirror.metrics import series
from mirror.proxy.fill import BlobFill
from mirror.proxy.memo import SingleFlight
from mirror.proxy.passthrough import PassThroughBlob
from mirror.proxy.sources import (
    BlobSize,
    BlobSource,
    CachedBlob,
    FillReader,
    PartialFollower,
    RefusalBypass,
)
from mirror.proxy.upstream import Upstreams, detach_body
from mirror.reference import Digest, Repository

log = logging.getLogger(__name__)

# A live fill touches its partial file every fill_stale_seconds / 4, and followers take it
# over once it is untouched for fill_stale_seconds. Leftovers are deleted only after three
# times that, so a fill that is merely slow, or being taken over right now, is never lost.
_LEFTOVER_STALE_FACTOR = 3


async def remove_leftovers(store: ContentStore, cache: CacheConfig) -> int:
    """Delete the temp files of instances that stopped (`ContentStore.clean_tmp`), off the
    event loop; returns how many."""
    return await asyncio.get_running_loop().run_in_executor(
        None, store.clean_tmp, cache.fill_stale_seconds * _LEFTOVER_STALE_FACTOR
    )


class _Running(NamedTuple):
    """A fill running here, and the repository whose upstream GET it is."""

    repo: Repository
    fill: BlobFill


class BlobFills:
    """Serves blobs from the store, or through one fill per blob across every instance."""

    def __init__(
        self,
        config: Config,
        store: ContentStore,
        metadata: MetadataCache,
        upstreams: Upstreams,
        executor: Executor,
        usage: StoreUsage,
        sif_tree: SifTree | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._metadata = metadata
        self._upstreams = upstreams
        self._usage = usage  # what fills add to the store, for /metrics
        self._executor = executor  # hashing and file writes of fills
        self._sif_tree = sif_tree
        self._fills: dict[str, _Running] = {}  # by digest hex
        self._heads = SingleFlight()  # upstream HEADs running, by (repository, digest hex)
        self._tasks: set[asyncio.Task] = set()

    async def close(self) -> None:
        """Cancel the fills still running; each deletes its temp file."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def size(self, repo: Repository, digest: Digest) -> BlobSize:
        """For HEAD: the blob's size from the cache, a running fill, or the upstream
        without fetching."""
        size, cache = self._store.blob_size(digest), series.HIT
        running = self._fills.get(digest.hex)
        if size is None and running is not None:
            if running.repo == repo:  # its GET answers for this repository
                await running.fill.started.wait()
            size, cache = running.fill.size, series.FILL_FOLLOWER
        if size is None:
            joined = self._heads.running((repo, digest.hex))
            size = await self._head(repo, digest)
            cache = series.FILL_FOLLOWER if joined else series.FILL_LEADER
        elif not await self._may_serve(repo, digest):
            size = None
        if size is None:
            raise BlobUnknown(f"blob {digest} is unknown to {repo}")
        return BlobSize(size, cache)

    async def open(self, repo: Repository, digest: Digest, *, uncached: bool = True) -> BlobSource:
        """A source for the blob's bytes: the cached file, or a share of a running fill.
        A blob the store refuses is passed through from the upstream, uncached; with
        `uncached=False` (prefetch, which exists to cache) that raises `StoreRefused`."""
        for _ in range(5):  # a fill may commit, fail or change hands between the checks
            size = self._store.blob_size(digest)
            if size is not None:
                if not await self._may_serve(repo, digest):
                    raise BlobUnknown(f"blob {digest} is unknown to {repo}")
                try:
                    return CachedBlob(digest, open(self._store.blob_path(digest), "rb"), size)
                except FileNotFoundError:
                    continue
            running = self._fills.get(digest.hex)
            # A fill for the same repository answers for it once its GET succeeds.
            if running is not None and running.repo != repo:
                if not await self._may_serve(repo, digest):
                    raise BlobUnknown(f"blob {digest} is unknown to {repo}")
            fill = running.fill if running is not None else None
            if fill is None:
                try:
                    writer = self._claim(digest)
                except StoreRefused:
                    if not uncached:
                        raise
                    return await self._pass_through(repo, digest)
                if writer is None:  # another instance fills it: follow its partial file
                    follower = await self._follow(repo, digest)
                    if follower is not None:
                        series.HERD_FOLLOWERS.inc()
                        return self._bypassable(repo, follower, uncached)
                    continue
                fill = self._start(repo, writer)
            try:
                reader = FillReader(fill, self._executor, leader=running is None)
            except FileNotFoundError:  # committed (found next time round) or failed
                if isinstance(fill.error, StoreRefused) and uncached:
                    return await self._pass_through(repo, digest)
                continue
            await fill.started.wait()
            if fill.error is not None and fill.written == 0:
                reader.close()
                if isinstance(fill.error, StoreRefused) and uncached:
                    return await self._pass_through(repo, digest)
                raise fill.error
            if running is not None:
                series.HERD_FOLLOWERS.inc()
            return self._bypassable(repo, reader, uncached)
        raise UpstreamBadGateway(f"blob {digest} kept changing state; try again")

    async def _may_serve(self, repo: Repository, digest: Digest) -> bool:
        """Cross-repository isolation: the digest must belong to `repo` by one of its cached
        manifests, or `repo`'s upstream must confirm it has the blob."""
        if self._metadata.may_serve_blob(repo, digest):
            return True
        if await self._head(repo, digest) is None:
            return False
        with self._store.refusals.tolerated(f"a link of {digest} to {repo}"):
            self._metadata.link_blob(repo, digest)
        return True

    async def _head(self, repo: Repository, digest: Digest) -> int | None:
        """The blob's size if `repo`'s upstream has it, else None: one HEAD for every
        client that asks at the same time."""
        return await self._heads.run((repo, digest.hex), lambda: self._head_once(repo, digest))

    async def _head_once(self, repo: Repository, digest: Digest) -> int | None:
        try:
            async with self._upstreams.client(repo.prefix).request_ok(
                "HEAD", repo.name, f"blobs/{digest}", BlobUnknown()
            ) as response:
                return response.content_length
        except BlobUnknown:
            return None

    async def _follow(self, repo: Repository, digest: Digest) -> PartialFollower | None:
        """Follow another instance's fill of `digest`; None when it finished, failed or its
        instance died meanwhile (the caller then looks again, and may claim it). The filling
        instance links the blob to its repository before it announces the size, so clients
        of that repository need no upstream request of their own."""
        stale = self._config.cache.fill_stale_seconds
        while (size := self._store.partial_size(digest)) is None:
            if self._store.blob_size(digest) is not None or self._store.break_stale_claim(
                digest, stale
            ):
                return None
            await asyncio.sleep(0.05)
        if not await self._may_serve(repo, digest):
            raise BlobUnknown(f"blob {digest} is unknown to {repo}")
        try:
            return PartialFollower(
                digest,
                self._store.partial_path(digest),
                self._store.blob_path(digest),
                size,
                stale,
                lambda: self._take_over(repo, digest),
                self._executor,
            )
        except FileNotFoundError:
            return None

    def _take_over(self, repo: Repository, digest: Digest) -> FillReader | None:
        """The instance filling `digest` died: fill it here, unless another did first."""
        # Refused, followers go on from the upstream, uncached.
        with self._store.refusals.raising(f"a takeover of the fill of {digest}"):
            writer = self._store.take_over_fill(digest, self._config.cache.fill_stale_seconds)
        if writer is None:
            return None
        log.warning(
            "taking over the fill of %s from an instance that stopped, at byte %d",
            digest,
            writer.size,
        )
        return FillReader(self._start(repo, writer), self._executor)

    def _claim(self, digest: Digest) -> BlobWriter | None:
        """`ContentStore.claim_fill`; raises `StoreRefused` (logged) if the store refuses."""
        with self._store.refusals.raising(f"a fill of {digest}"):
            return self._store.claim_fill(digest)

    def _bypassable(
        self, repo: Repository, source: FillReader | PartialFollower, uncached: bool
    ) -> BlobSource:
        """`source`, going on from the upstream should the store refuse the blob."""
        if not uncached:
            return source
        return RefusalBypass(source, lambda: self._new_pass_through(repo, source.digest))

    async def _pass_through(self, repo: Repository, digest: Digest) -> PassThroughBlob:
        """The blob straight from `repo`'s upstream to one client: the store refuses it."""
        blob = self._new_pass_through(repo, digest)
        await blob.begin()
        return blob

    def _new_pass_through(self, repo: Repository, digest: Digest) -> PassThroughBlob:
        client = self._upstreams.client(repo.prefix)
        unknown = BlobUnknown(f"blob {digest} is unknown to {repo}")
        return PassThroughBlob(
            digest,
            lambda start: client.blob_from(repo.name, str(digest), unknown, start),
            self._executor,
            self._config.client.read_timeout_seconds,
            client.count_received,
        )

    def _start(self, repo: Repository, writer: BlobWriter) -> BlobFill:
        client = self._upstreams.client(repo.prefix)
        fill = BlobFill(writer, self._executor, client.count_received)
        self._fills[writer.digest.hex] = _Running(repo, fill)
        series.FILLS_IN_FLIGHT.inc()
        task = asyncio.ensure_future(self._run(repo, fill))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    async def _run(self, repo: Repository, fill: BlobFill) -> None:
        started_at = time.monotonic()
        try:
            async with (
                self._upstreams.client(repo.prefix).blob_from(
                    repo.name,
                    str(fill.digest),
                    BlobUnknown(f"blob {fill.digest} is unknown to {repo}"),
                    fill.writer.size,  # a fill taken over holds the first bytes already
                ) as (response, size, skip),
                self._heartbeat(fill),
            ):
                # The upstream has it: clients of `repo` here and on other instances may
                # join without asking it again (they look for this link once the size is out).
                with self._store.refusals.tolerated(f"a link of {fill.digest} to {repo}"):
                    self._metadata.link_blob(repo, fill.digest)
                if size is not None:
                    with raising_store_refused():
                        fill.writer.announce_size(size)
                if fill.writer.size:
                    await asyncio.get_running_loop().run_in_executor(
                        self._executor, fill.writer.hash_existing
                    )
                detached = detach_body(response) if not skip else None
                if detached is None:
                    chunks = _body_chunks(response)
                    await fill.run(size, _skip(chunks, skip) if skip else chunks)
                else:
                    blob_size = fill.written + detached.length
                    timeout = self._config.client.read_timeout_seconds
                    if detached.sock is not None:  # plain HTTP: a worker thread receives
                        await fill.run_from_socket(
                            blob_size, detached.prefix, detached.sock, timeout
                        )
                    else:  # TLS: the event loop decrypts
                        await fill.run_from_transport(
                            blob_size, detached.prefix, detached.transport, timeout
                        )
                    response.close()
            if fill.error is None:  # verified and in place
                self._store.refusals.accepted()
                self._usage.added(fill.digest, fill.written)
                if self._sif_tree is not None:
                    self._sif_tree.blob_cached(fill.digest)
            else:
                self._report_failure(repo, fill.digest, fill.error)
        except MirrorError as exc:
            if not fill.started.is_set():
                fill.fail_before_start(exc)
            self._report_failure(repo, fill.digest, exc)
        except BaseException:
            if not fill.started.is_set():
                fill.fail_before_start(UpstreamBadGateway(f"download of {fill.digest} failed"))
            raise
        finally:
            self._fills.pop(fill.digest.hex, None)
            series.FILLS_IN_FLIGHT.dec()
            outcome = "verified" if fill.verified and fill.error is None else "failed"
            series.FILL_SECONDS.labels(outcome).observe(time.monotonic() - started_at)

    def _report_failure(self, repo: Repository, digest: Digest, error: MirrorError) -> None:
        if isinstance(error, StoreRefused):  # not the upstream's fault: say whose
            self._store.refusals.refused(error.cause, f"the fill of {digest}")
        else:
            log.warning("fill of %s for %s failed: %s", digest, repo, error.message)

    def _heartbeat(self, fill: BlobFill) -> AbstractAsyncContextManager[None]:
        """Touch the shared partial file while this instance fills it, so instances that
        follow it can tell a slow upstream from a dead filler."""
        paths = [fill.writer.temp_path, fill.writer.size_path]
        return heartbeat(paths, self._config.cache)


@asynccontextmanager
async def heartbeat(paths: Sequence[Path | None], cache: CacheConfig) -> AsyncIterator[None]:
    """Touch the claim files `paths` every `fill_stale_seconds / 4` while the block runs:
    other instances take a claim over once it is untouched for `fill_stale_seconds`."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(cache.fill_stale_seconds / 4)
            for path in paths:
                try:
                    if path is not None:
                        os.utime(path)
                except OSError:  # gone, or a failing filesystem the work will hit too
                    pass

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        task.cancel()


async def _skip(chunks: AsyncIterator[bytes], count: int) -> AsyncIterator[bytes]:
    """The body without its first `count` bytes (the temp file holds them already)."""
    async for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:] if count else chunk
        count = 0


async def _body_chunks(response: ClientResponse) -> AsyncIterator[bytes]:
    """The body as the socket delivers it, without aiohttp joining pieces (a copy)."""
    while True:
        chunk, _ = await response.content.readchunk()
        if not chunk:
            return
        yield chunk
