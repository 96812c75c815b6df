"""The proxy's decisions for tags and manifests; blobs are handed to `BlobFills`.

Policy follows mutability. Content by digest is immutable: once cached (and linked to the
repository asking), it never costs an upstream request. A tag is trusted for
`tag_ttl_seconds`; after that the upstream is asked with a HEAD and the manifest is fetched
only if the digest moved. When the upstream fails, a cached tag is served stale with a
warning. Concurrent misses of one manifest share one upstream request (of one blob, too,
across every instance: see blob_fills.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from mirror.cache.metadata import MetadataCache
from mirror.cache.open_cache import open_cache
from mirror.cache.pulls import PullStats
from mirror.cache.siftree import SifTree
from mirror.cache.store import ContentStore, TagRecord
from mirror.cache.usage import StoreUsage
from mirror.config import Config
from mirror.errors import (
    DigestMismatch,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    UpstreamBadGateway,
    UpstreamFailed,
)
from mirror.local.images import LocalImages
from mirror.local.uploads import BlobUploads
from mirror.manifests import Kind, declared_media_type
from mirror.manifests import parse as parse_manifest
from mirror.metrics import series
from mirror.proxy.blob_fills import BlobFills, remove_leftovers
from mirror.proxy.memo import ManifestMemory, SingleFlight
from mirror.proxy.policy import tag_is_fresh
from mirror.proxy.routing import Router
from mirror.proxy.sources import BlobSize, BlobSource, CachedBlob
from mirror.proxy.throttled_log import ThrottledWarning
from mirror.proxy.upstream import RegistryClient, Upstreams
from mirror.reference import (
    MANIFEST_MEDIA_TYPES,
    Digest,
    Repository,
    check_tag,
    is_digest,
)

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # fetched from an upstream or pushed
LOCAL_UPSTREAM_NAME = "local"  # what the access log and metrics name the local namespace
UPSTREAM_ACCEPT = ",".join(MANIFEST_MEDIA_TYPES)
STALE_WARNING = '111 hpc-mirror "Revalidation Failed"'
# The store's size is rescanned a bounded piece at a time: at least this many blobs (or one
# whole shard) every few seconds, so what other instances add and gc removes shows up.
_USAGE_RESCAN_SECONDS = 5.0
_USAGE_RESCAN_BLOBS = 2000


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: Digest
    media_type: str
    body: bytes
    warning: str | None = None  # set when served stale because the upstream failed
    cache: str = series.HIT  # where it came from (`series.HIT`, ...), for the access log


@asynccontextmanager
async def running_service(config: Config) -> AsyncIterator["ProxyService"]:
    """The service and everything it owns, for as long as the block runs. Nothing here
    contacts an upstream: the service starts with every upstream down."""
    with open_cache(config.cache) as (store, metadata, pulls):
        removed = await remove_leftovers(store, config.cache)
        if removed:
            log.info("removed %d leftover temp files of stopped instances", removed)
        async with Upstreams(config.upstreams, config.client) as upstreams:
            service = ProxyService(config, store, metadata, pulls, upstreams)
            try:
                yield service
            finally:
                await service.close()


class ProxyService:
    """What the HTTP layer and prefetch ask for: routing, tags and manifests, and blobs
    (delegated to `BlobFills`)."""

    def __init__(
        self,
        config: Config,
        store: ContentStore,
        metadata: MetadataCache,
        pulls: PullStats,
        upstreams: Upstreams,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.metadata = metadata
        self.pulls = pulls
        self.upstreams = upstreams
        self.clock = clock
        self.router = Router(config)
        self._by_prefix = self.router.by_prefix
        self._memory = ManifestMemory(config.cache.manifest_memory_mib * 1024 * 1024)
        self._flights = SingleFlight()
        self._sif_tree = SifTree(config.cache.sif_tree, store) if config.cache.sif_tree else None
        # Hashing and file writes of fills and manifests; sha256 releases the GIL, so two
        # threads use both cores of a small node while the event loop moves bytes.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mirror-io")
        self.usage = StoreUsage(store)
        self._blobs = BlobFills(
            config, store, metadata, upstreams, self._executor, self.usage, self._sif_tree
        )
        self.local = LocalImages(
            store, metadata, self._cached_manifest_body, self._executor, self.clock, self.usage
        )
        self.uploads = BlobUploads(store, metadata, config.local, self._executor, clock, self.usage)

    async def close(self) -> None:
        await self._blobs.close()
        self._executor.shutdown(wait=True)

    async def measure_store(self) -> None:
        """Keep the store's size for /metrics until cancelled: read whole once (in a worker
        thread, one shard per call, so the proxy serves meanwhile and a stop waits for one
        shard at most), then a bounded piece every few seconds."""
        loop = asyncio.get_running_loop()
        failing = ThrottledWarning(log)
        while True:
            first_round = self.usage.totals() is None
            try:
                await loop.run_in_executor(
                    None, self.usage.rescan, 0 if first_round else _USAGE_RESCAN_BLOBS
                )
            except OSError as exc:  # a failing filesystem: the figures stay as they were
                failing("cannot read the store to measure its size: %s", exc)
                first_round = False
            if not first_round:
                await asyncio.sleep(_USAGE_RESCAN_SECONDS)

    # -- routing ---------------------------------------------------------------------------
    def route(self, path_name: str, ns: str | None = None) -> Repository:
        return self.router.route(path_name, ns)

    def upstream_name(self, repo: Repository) -> str:
        """The name of the upstream `repo` routes to (its `[upstreams.<name>]`); for a
        converted SIF, its source's upstream; "local" for the local namespace."""
        source = self.router.source_of(repo)
        if self.router.is_local(source):
            return LOCAL_UPSTREAM_NAME
        return self._by_prefix[source.prefix].name

    def _client(self, repo: Repository) -> RegistryClient:
        return self.upstreams.client(repo.prefix)

    # -- manifests -------------------------------------------------------------------------
    async def get_manifest(
        self, repo: Repository, reference: str, *, count_pull: bool = True
    ) -> Manifest:
        """`repo`'s manifest by tag or digest; `count_pull=False` when no client pulls it
        (a conversion reading its source image)."""
        if self.router.is_local(repo):
            stored = self.local.get_manifest(repo, reference)
            manifest = Manifest(stored.digest, stored.media_type, stored.body)
        elif is_digest(reference):
            manifest = await self._manifest_by_digest(repo, Digest.parse(reference))
        else:
            manifest = await self._manifest_by_tag(repo, check_tag(reference))
        if count_pull:
            self.pulls.record(repo, reference)
        return manifest

    async def _manifest_by_digest(self, repo: Repository, digest: Digest) -> Manifest:
        media_type = self.metadata.manifest_media_type(repo, digest)
        if media_type is not None:
            body = self._cached_manifest_body(digest)
            if body is not None:
                return Manifest(digest, media_type, body)
        return await self._shared(
            ("manifest", repo, str(digest)), lambda: self._fetch_manifest(repo, str(digest), digest)
        )

    async def _manifest_by_tag(self, repo: Repository, tag: str) -> Manifest:
        now = self.clock()
        # An offline upstream is never asked: whatever is cached is the answer.
        ttl = (
            float("inf")
            if self._by_prefix[repo.prefix].offline
            else self.config.cache.tag_ttl_seconds
        )
        record = self.metadata.tag(repo, tag)
        if record is not None and not tag_is_fresh(record.confirmed_at, now, ttl):
            record = self.metadata.tag(repo, tag, from_store=True)  # another node may have asked
        if record is not None and tag_is_fresh(record.confirmed_at, now, ttl):
            cached = self._manifest_from_record(record)
            if cached is not None:
                return cached
        return await self._shared(
            ("tag", repo, tag), lambda: self._revalidate_tag(repo, tag, record)
        )

    async def _shared(self, key: Any, work: Callable[[], Awaitable[Manifest]]) -> Manifest:
        """`work` once for concurrent callers; those that joined it are fetch followers."""
        joined = self._flights.running(key)
        manifest: Manifest = await self._flights.run(key, work)
        if joined and manifest.cache == series.FILL_LEADER:
            return replace(manifest, cache=series.FILL_FOLLOWER)
        return manifest

    def _manifest_from_record(
        self, record: TagRecord, warning: str | None = None, cache: str = series.HIT
    ) -> Manifest | None:
        body = self._cached_manifest_body(record.digest)
        if body is None:
            return None
        return Manifest(record.digest, record.media_type, body, warning, cache)

    def _cached_manifest_body(self, digest: Digest) -> bytes | None:
        body = self._memory.get(digest)
        if body is None:
            body = self.store.read_blob(digest)
            if body is not None:
                self._memory.put(digest, body)
        return body

    async def _revalidate_tag(
        self, repo: Repository, tag: str, record: TagRecord | None
    ) -> Manifest:
        """Ask upstream about a tag (`_ask_about_tag`); when it fails, serve stale."""
        try:
            manifest = await self._ask_about_tag(repo, tag, record)
        except UpstreamFailed as exc:
            self._count_revalidation(repo, record, series.FAILED)
            return self._stale(repo, tag, record, exc)
        except MirrorError:
            self._count_revalidation(repo, record, series.FAILED)
            raise
        moved = record is not None and manifest.digest != record.digest
        self._count_revalidation(repo, record, series.MOVED if moved else series.UNCHANGED)
        return manifest

    async def _ask_about_tag(
        self, repo: Repository, tag: str, record: TagRecord | None
    ) -> Manifest:
        """HEAD when we hold an answer (no pull-limit cost on Docker Hub), GET only when
        the digest moved."""
        if record is not None and self.store.blob_size(record.digest) is not None:
            upstream_digest = await self._head_manifest_digest(repo, tag)
            if upstream_digest == record.digest:
                confirmed = TagRecord(record.digest, record.media_type, self.clock())
                with self.store.refusals.tolerated(f"the tag {repo}:{tag}"):
                    self.metadata.put_tag(repo, tag, confirmed)
                cached = self._manifest_from_record(confirmed, cache=series.REVALIDATED)
                if cached is not None:
                    return cached
        return await self._fetch_manifest(repo, tag, None)

    def _stale(
        self, repo: Repository, tag: str, record: TagRecord | None, failure: UpstreamFailed
    ) -> Manifest:
        """The cached answer for a tag the upstream failed to confirm, with a warning, if it
        is not too old; else `failure`."""
        age = self.clock() - record.confirmed_at if record is not None else 0.0
        if record is None or age > self.config.cache.max_stale_seconds:
            raise failure
        stale = self._manifest_from_record(record, STALE_WARNING, series.STALE)
        if stale is None:
            raise failure
        log.warning(
            "serving %s:%s stale (confirmed %.0fs ago): %s", repo, tag, age, failure.message
        )
        series.STALE_ANSWERS.labels(self._by_prefix[repo.prefix].name).inc()
        return stale

    def _count_revalidation(self, repo: Repository, record: TagRecord | None, outcome: str) -> None:
        """A tag's first fetch is no revalidation: only one held before counts."""
        if record is not None:
            upstream = self._by_prefix[repo.prefix].name
            series.TAG_REVALIDATIONS.labels(upstream, outcome).inc()

    async def _head_manifest_digest(self, repo: Repository, tag: str) -> Digest | None:
        unknown = ManifestUnknown(f"manifest {tag!r} of {repo} is unknown upstream")
        async with self._client(repo).request_ok(
            "HEAD", repo.name, f"manifests/{tag}", unknown, UPSTREAM_ACCEPT
        ) as response:
            header = response.headers.get("Docker-Content-Digest", "")
        try:
            return Digest.parse(header)
        except MirrorError:
            return None  # no usable digest header: the caller GETs and hashes

    async def _fetch_manifest(
        self, repo: Repository, reference: str, expected: Digest | None
    ) -> Manifest:
        """GET a manifest from upstream, verify it, store it byte-exact, link it to `repo`."""
        unknown = ManifestUnknown(f"manifest {reference!r} of {repo} is unknown upstream")
        async with self._client(repo).request_ok(
            "GET", repo.name, f"manifests/{reference}", unknown, UPSTREAM_ACCEPT
        ) as response:
            if (response.content_length or 0) > MAX_MANIFEST_BYTES:
                raise UpstreamBadGateway("upstream manifest is larger than the mirror accepts")
            body = await _read_limited(response, MAX_MANIFEST_BYTES)
            self._client(repo).count_received(len(body))
            media_type = response.headers.get("Content-Type", "").strip()
            header_digest = response.headers.get("Docker-Content-Digest", "")
        digest = Digest(hashlib.sha256(body).hexdigest())
        if expected is not None and digest != expected:
            raise DigestMismatch(f"upstream manifest for {expected} hashed to {digest}")
        if header_digest.startswith("sha256:") and header_digest != str(digest):
            raise DigestMismatch(
                f"upstream manifest hashed to {digest}, upstream said {header_digest[:80]}"
            )
        if not media_type:
            media_type = declared_media_type(body)
        parsed = parse_manifest(body, media_type)
        # A store that refuses writes costs the cache, never the pull: the verified bytes
        # are served from memory, and the next request asks the upstream again.
        with self.store.refusals.tolerated(f"manifest {digest}"):
            if await self._run_io(self.store.put_bytes, digest, body):
                self.store.refusals.accepted()
                self.usage.added(digest, len(body))
            self.metadata.link_manifest(repo, digest, media_type, parsed)
            if expected is None:
                self.metadata.put_tag(repo, reference, TagRecord(digest, media_type, self.clock()))
                self.metadata.forget_repositories()
                if self._sif_tree is not None and parsed.kind is Kind.SIF:
                    self._sif_tree.tag_fetched(repo, reference, parsed.layers[0].digest)
        self._memory.put(digest, body)
        return Manifest(digest, media_type, body, cache=series.FILL_LEADER)

    # -- blobs -----------------------------------------------------------------------------
    async def blob_size(self, repo: Repository, digest: Digest) -> BlobSize:
        """For HEAD: the blob's size from the cache, or from the upstream without fetching."""
        if self.router.is_local(repo):
            return BlobSize(self.local.blob_size(repo, digest), series.HIT)
        return await self._blobs.size(repo, digest)

    async def open_blob(
        self, repo: Repository, digest: Digest, *, uncached: bool = True
    ) -> BlobSource:
        """A source for the blob's bytes: the cached file, a share of a running fill, or
        (should the store refuse it, unless `uncached` is False) the upstream's body."""
        if self.router.is_local(repo):
            return CachedBlob(digest, *self.local.open_blob(repo, digest))
        return await self._blobs.open(repo, digest, uncached=uncached)

    # -- listings --------------------------------------------------------------------------
    async def list_tags(self, repo: Repository) -> list[str]:
        """The upstream's tags when it answers, else the tags cached for `repo`."""
        if self.router.is_local(repo):
            return self.local.list_tags(repo)
        try:
            unknown = NameUnknown(f"repository {repo} is unknown upstream")
            async with self._client(repo).request_ok(
                "GET", repo.name, "tags/list", unknown
            ) as response:
                raw = await response.read()
            self._client(repo).count_received(len(raw))
            body = json.loads(raw)
            tags = body.get("tags") if isinstance(body, dict) else None
            return sorted(t for t in tags or [] if isinstance(t, str))
        except (UpstreamFailed, ValueError):
            cached = self.metadata.tags(repo)
            if not cached:
                raise
            return cached

    def repositories(self, visible: Callable[[Repository], bool] = lambda repo: True) -> list[str]:
        """The cached repositories `visible` lets through, by canonical name."""
        return [str(repo) for repo in self.metadata.repositories() if visible(repo)]

    async def _run_io(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)


async def _read_limited(response: Any, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise UpstreamBadGateway("upstream manifest is larger than the mirror accepts")
    return bytes(body)
