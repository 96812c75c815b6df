"""Cache one image as a pull would, without a client: the manifest, the platforms asked
for of an index, then config and layers, each through the service, so what is cached this
way is verified, linked and single-flighted exactly like pulled content. `mirror prefetch`
walks its images with it; a conversion walks its source image with it first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mirror.errors import PlatformUnknown, UpstreamBadGateway
from mirror.manifests import Kind, parse, platform_text
from mirror.proxy.service import Manifest, ProxyService
from mirror.reference import Digest, Repository

BytesProgress = Callable[[int, int], None]  # (bytes to add to the total, bytes done)
# How long a verified fill's fsync and rename may take on a busy cluster filesystem.
_STORED_WAIT_SECONDS = 120.0


@dataclass
class WalkTally:
    """What caching one image did."""

    manifests: int = 0
    blobs: int = 0
    fetched_bytes: int = 0  # came from the upstream in this walk
    cached_bytes: int = 0  # were in the cache already
    platforms: list[str] = field(default_factory=list)


async def cache_image(
    service: ProxyService,
    repo: Repository,
    reference: str,
    *,
    platform: str | None = None,
    tally: WalkTally | None = None,
    progress: BytesProgress | None = None,
    downloads: asyncio.Semaphore | None = None,
    count_pull: bool = True,
) -> Manifest:
    """Cache `repo` at `reference` with its blobs (of an index: the children for
    `platform`, or all); at most `downloads` blob downloads at once. Returns the manifest
    `reference` names. `count_pull=False` leaves the pull statistics alone."""
    walk = _Walk(service, tally or WalkTally(), progress, downloads, count_pull)
    return await walk.image(repo, reference, platform)


class _Walk:
    def __init__(
        self,
        service: ProxyService,
        tally: WalkTally,
        progress: BytesProgress | None,
        downloads: asyncio.Semaphore | None,
        count_pull: bool,
    ) -> None:
        self.service = service
        self.tally = tally
        self.report = progress or (lambda total, done: None)
        self.downloads = downloads or asyncio.Semaphore(4)
        self.count_pull = count_pull

    async def image(self, repo: Repository, reference: str, platform: str | None) -> Manifest:
        manifest = await self.service.get_manifest(repo, reference, count_pull=self.count_pull)
        self.tally.manifests += 1
        parsed = parse(manifest.body, manifest.media_type)
        if parsed.kind is Kind.INDEX:
            children = [
                c
                for c in parsed.manifests
                if platform is None or platform_text(c.platform) == platform
            ]
            if not children:
                raise PlatformUnknown(f"no manifest for platform {platform} in {repo}:{reference}")
            for child in children:
                self.tally.platforms.append(platform_text(child.platform) or "unspecified")
                await self.image(repo, str(child.digest), None)
            return manifest
        blobs = [d for d in ((parsed.config,) if parsed.config else ()) + parsed.layers]
        self.report(sum(max(b.size, 0) for b in blobs), 0)
        await asyncio.gather(*(self._blob(repo, b.digest) for b in blobs))
        return manifest

    async def _blob(self, repo: Repository, digest: Digest) -> None:
        async with self.downloads:
            await cache_blob(self.service, repo, digest, self.tally, self.report)


async def cache_blob(
    service: ProxyService,
    repo: Repository,
    digest: Digest,
    tally: WalkTally | None = None,
    progress: BytesProgress | None = None,
) -> None:
    """Cache one blob of `repo` (fetched once, verified, as for a client), counted in
    `tally`; a store that refuses it raises `StoreRefused`."""
    report = progress or (lambda total, done: None)
    tally = tally or WalkTally()
    source = await service.open_blob(repo, digest, uncached=False)  # here to cache it
    try:
        size = source.size
        if service.store.blob_size(digest) is not None:
            tally.cached_bytes += size or 0
            report(0, size or 0)
        else:
            # Follow the fill as a client would; `end` is only reached once verified.
            end = size if size is not None else 1 << 62
            position = 0
            while (bound := await source.sendable(position, end)) < end:
                report(0, bound - position)
                position = bound
            total = source.size or 0  # known once `sendable` has returned `end`
            report(0, total - position)
            tally.fetched_bytes += total
    finally:
        source.close()
    await _until_stored(service, digest)
    tally.blobs += 1


async def _until_stored(service: ProxyService, digest: Digest) -> None:
    """A fill lets its readers finish once the digest verifies; the fsync and rename into
    place follow. Whoever needs the blob in the store (a conversion) waits for them."""
    deadline = time.monotonic() + _STORED_WAIT_SECONDS
    while service.store.blob_size(digest) is None:
        if time.monotonic() > deadline:
            raise UpstreamBadGateway(f"blob {digest} was fetched but did not reach the store")
        await asyncio.sleep(0.02)
