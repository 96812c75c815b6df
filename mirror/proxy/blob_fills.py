"""Blobs for the proxy: from the cache, or filled from the upstream once across every instance.

A blob is served to a repository only if one of its cached manifests names it or its
upstream confirms it has it. A miss claims the blob's shared partial file in the store: the
instance holding the claim downloads it once (one `BlobFill` that every local client reads
along) and touches the file as a heartbeat; other instances follow the file as it grows,
and take the fill over when the heartbeat stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager

from aiohttp import ClientResponse

from mirror.cache.metadata import MetadataCache
from mirror.cache.siftree import SifTree
from mirror.cache.store import BlobWriter, ContentStore
from mirror.config import CacheConfig, Config
from mirror.errors import BlobUnknown, MirrorError, UpstreamBadGateway
from mirror.proxy.fill import BlobFill
from mirror.proxy.sources import BlobSource, CachedBlob, FillReader, PartialFollower
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


class BlobFills:
    """Serves blobs from the store, or through one fill per blob across every instance."""

    def __init__(
        self,
        config: Config,
        store: ContentStore,
        metadata: MetadataCache,
        upstreams: Upstreams,
        executor: Executor,
        sif_tree: SifTree | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._metadata = metadata
        self._upstreams = upstreams
        self._executor = executor  # hashing and file writes of fills
        self._sif_tree = sif_tree
        self._fills: dict[str, BlobFill] = {}  # running here, by digest hex
        self._tasks: set[asyncio.Task] = set()

    async def close(self) -> None:
        """Cancel the fills still running; each deletes its temp file."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def size(self, repo: Repository, digest: Digest) -> int:
        """For HEAD: the blob's size from the cache, or from the upstream without fetching."""
        size = self._store.blob_size(digest)
        if size is not None and await self._may_serve(repo, digest):
            return size
        fill = self._fills.get(digest.hex)
        if fill is not None and fill.size is not None and await self._may_serve(repo, digest):
            return fill.size
        upstream_size = await self._head(repo, digest)
        if upstream_size is None:
            raise BlobUnknown(f"blob {digest} is unknown to {repo}")
        return upstream_size

    async def open(self, repo: Repository, digest: Digest) -> BlobSource:
        """A source for the blob's bytes: the cached file, or a share of a running fill."""
        for _ in range(5):  # a fill may commit, fail or change hands between the checks
            size = self._store.blob_size(digest)
            if size is not None:
                if not await self._may_serve(repo, digest):
                    raise BlobUnknown(f"blob {digest} is unknown to {repo}")
                try:
                    return CachedBlob(digest, open(self._store.blob_path(digest), "rb"), size)
                except FileNotFoundError:
                    continue
            fill = self._fills.get(digest.hex)
            if fill is not None and not await self._may_serve(repo, digest):
                raise BlobUnknown(f"blob {digest} is unknown to {repo}")
            if fill is None:
                writer = self._store.claim_fill(digest)
                if writer is None:  # another instance fills it: follow its partial file
                    follower = await self._follow(repo, digest)
                    if follower is not None:
                        return follower
                    continue
                fill = self._start(repo, writer)
            try:
                reader = FillReader(fill)
            except FileNotFoundError:
                continue
            await fill.started.wait()
            if fill.error is not None and fill.written == 0:
                reader.close()
                raise fill.error
            return reader
        raise UpstreamBadGateway(f"blob {digest} kept changing state; try again")

    async def _may_serve(self, repo: Repository, digest: Digest) -> bool:
        """Cross-repository isolation: the digest must belong to `repo` by one of its cached
        manifests, or `repo`'s upstream must confirm it has the blob."""
        if self._metadata.may_serve_blob(repo, digest):
            return True
        if await self._head(repo, digest) is None:
            return False
        self._metadata.link_blob(repo, digest)
        return True

    async def _head(self, repo: Repository, digest: Digest) -> int | None:
        """The blob's size if `repo`'s upstream has it, else None."""
        try:
            async with self._upstreams.client(repo.prefix).request_ok(
                "HEAD", repo.name, f"blobs/{digest}", BlobUnknown()
            ) as response:
                return response.content_length
        except BlobUnknown:
            return None

    async def _follow(self, repo: Repository, digest: Digest) -> BlobSource | None:
        """Follow another instance's fill of `digest`; None when it finished, failed or its
        instance died meanwhile (the caller then looks again, and may claim it)."""
        if not await self._may_serve(repo, digest):
            raise BlobUnknown(f"blob {digest} is unknown to {repo}")
        stale = self._config.cache.fill_stale_seconds
        while (size := self._store.partial_size(digest)) is None:
            if self._store.blob_size(digest) is not None or self._store.break_stale_claim(
                digest, stale
            ):
                return None
            await asyncio.sleep(0.05)
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
        if not self._store.break_stale_claim(digest, self._config.cache.fill_stale_seconds):
            return None
        writer = self._store.claim_fill(digest)
        if writer is None:
            return None
        log.warning("taking over the fill of %s from an instance that stopped", digest)
        return FillReader(self._start(repo, writer))

    def _start(self, repo: Repository, writer: BlobWriter) -> BlobFill:
        fill = BlobFill(writer, self._executor)
        self._fills[writer.digest.hex] = fill
        task = asyncio.ensure_future(self._run(repo, fill))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    async def _run(self, repo: Repository, fill: BlobFill) -> None:
        try:
            unknown = BlobUnknown(f"blob {fill.digest} is unknown to {repo}")
            async with (
                self._upstreams.client(repo.prefix).request_ok(
                    "GET", repo.name, f"blobs/{fill.digest}", unknown
                ) as response,
                self._heartbeat(fill),
            ):
                if response.content_length is not None:
                    fill.writer.announce_size(response.content_length)
                detached = detach_body(response)
                if detached is None:
                    await fill.run(response.content_length, _body_chunks(response))
                elif detached.sock is not None:
                    await fill.run_from_socket(
                        detached.length,
                        detached.prefix,
                        detached.sock,
                        self._config.client.read_timeout_seconds,
                    )
                    response.close()
                else:
                    await fill.run_from_transport(
                        detached.length,
                        detached.prefix,
                        detached.transport,
                        self._config.client.read_timeout_seconds,
                    )
                    response.close()
            if fill.verified:
                self._metadata.link_blob(repo, fill.digest)
                if self._sif_tree is not None:
                    self._sif_tree.blob_cached(fill.digest)
            else:
                log.warning(
                    "fill of %s for %s failed: %s",
                    fill.digest,
                    repo,
                    fill.error.message if fill.error else "?",
                )
        except MirrorError as exc:
            if not fill.started.is_set():
                fill.fail_before_start(exc)
            log.warning("fill of %s for %s failed: %s", fill.digest, repo, exc.message)
        except BaseException:
            if not fill.started.is_set():
                fill.fail_before_start(UpstreamBadGateway(f"download of {fill.digest} failed"))
            raise
        finally:
            self._fills.pop(fill.digest.hex, None)

    @asynccontextmanager
    async def _heartbeat(self, fill: BlobFill) -> AsyncIterator[None]:
        """Touch the shared partial file while this instance fills it, so instances that
        follow it can tell a slow upstream from a dead filler."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self._config.cache.fill_stale_seconds / 4)
                for path in (fill.writer.temp_path, fill.writer.size_path):
                    try:
                        if path is not None:
                            os.utime(path)
                    except FileNotFoundError:
                        pass

        task = asyncio.ensure_future(beat())
        try:
            yield
        finally:
            task.cancel()


async def _body_chunks(response: ClientResponse) -> AsyncIterator[bytes]:
    """The body as the socket delivers it, without aiohttp joining pieces (a copy)."""
    while True:
        chunk, _ = await response.content.readchunk()
        if not chunk:
            return
        yield chunk
