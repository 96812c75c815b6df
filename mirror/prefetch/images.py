"""Pre-warming: fill the cache with a list of images without any client.

Each image is walked like a pull (manifest, the platforms asked for of an index, then
config and layers) through the same service the proxy uses, so prefetched content is
verified, linked and single-flighted exactly like pulled content, and a second run only
fetches what is missing. Progress is reported through callbacks, so the CLI can draw bars
while the library stays free of terminal code.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mirror.errors import InvalidValue, MirrorError, PlatformUnknown
from mirror.manifests import Kind, parse, platform_text
from mirror.proxy.routing import Router
from mirror.proxy.service import ProxyService
from mirror.reference import Digest, ImageRef, Repository, check_tag, is_digest

# os/architecture[/variant], as image indexes name platforms: linux/amd64, linux/arm/v7.
_PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")


@dataclass
class ImageResult:
    """What prefetching one image did."""

    reference: str
    error: str | None = None
    manifests: int = 0
    blobs: int = 0
    fetched_bytes: int = 0  # came from the upstream in this run
    cached_bytes: int = 0  # were in the cache already
    platforms: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[str, int, int], None]  # (image, bytes to add to total, bytes done)


def check_request(router: Router, images: list[str], platform: str | None) -> None:
    """Every image name and the platform, checked before anything is drawn or fetched:
    one `InvalidValue` naming each one that cannot be pulled as written."""
    problems = []
    if platform is not None and not _PLATFORM_RE.fullmatch(platform):
        problems.append(
            f"--platform {platform!r}: give os/architecture[/variant], e.g. linux/amd64"
        )
    for text in images:
        try:
            ref = ImageRef.parse(text)
            router.route(ref.path)
            if is_digest(ref.reference):
                Digest.parse(ref.reference)
            else:
                check_tag(ref.reference)
        except MirrorError as exc:
            problems.append(f"{text!r}: {exc.message}")
    if problems:
        raise InvalidValue("; ".join(problems))


async def prefetch(
    service: ProxyService,
    images: list[str],
    *,
    platform: str | None = None,
    parallel: int = 4,
    progress: Progress | None = None,
) -> list[ImageResult]:
    """Prefetch `images` (at most `parallel` blob downloads at once); never raises for
    one image's failure: it is recorded in that image's result."""
    downloads = asyncio.Semaphore(max(parallel, 1))
    report = progress or (lambda image, total, done: None)

    async def one(text: str) -> ImageResult:
        result = ImageResult(text)
        try:
            ref = ImageRef.parse(text)
            repo = service.route(ref.path)
            await _walk(service, repo, ref.reference, platform, result, downloads, report)
        except MirrorError as exc:
            result.error = f"{exc.code}: {exc.message}"
        return result

    return list(await asyncio.gather(*(one(image) for image in images)))


async def _walk(
    service: ProxyService,
    repo: Repository,
    reference: str,
    platform: str | None,
    result: ImageResult,
    downloads: asyncio.Semaphore,
    report: Progress,
) -> None:
    manifest = await service.get_manifest(repo, reference)
    result.manifests += 1
    parsed = parse(manifest.body, manifest.media_type)
    if parsed.kind is Kind.INDEX:
        children = [
            c for c in parsed.manifests if platform is None or platform_text(c.platform) == platform
        ]
        if not children:
            raise PlatformUnknown(f"no manifest for platform {platform} in {repo}:{reference}")
        for child in children:
            result.platforms.append(platform_text(child.platform) or "unspecified")
            await _walk(service, repo, str(child.digest), None, result, downloads, report)
        return
    blobs = [d for d in ((parsed.config,) if parsed.config else ()) + parsed.layers]
    report(result.reference, sum(max(b.size, 0) for b in blobs), 0)
    await asyncio.gather(
        *(_fetch_blob(service, repo, b.digest, result, downloads, report) for b in blobs)
    )


async def _fetch_blob(
    service: ProxyService,
    repo: Repository,
    digest: Digest,
    result: ImageResult,
    downloads: asyncio.Semaphore,
    report: Progress,
) -> None:
    async with downloads:
        source = await service.open_blob(repo, digest, uncached=False)  # here to cache it
        try:
            size = source.size
            if service.store.blob_size(digest) is not None:
                result.cached_bytes += size or 0
                report(result.reference, 0, size or 0)
            else:
                # Follow the fill as a client would; `end` is only reached once verified.
                end = size if size is not None else 1 << 62
                position = 0
                while (bound := await source.sendable(position, end)) < end:
                    report(result.reference, 0, bound - position)
                    position = bound
                total = source.size or 0  # known once `sendable` has returned `end`
                report(result.reference, 0, total - position)
                result.fetched_bytes += total
        finally:
            source.close()
    result.blobs += 1
