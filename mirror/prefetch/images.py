"""Pre-warming: fill the cache with a list of images without any client.

Each image is walked like a pull (`mirror.proxy.image_walk`: manifest, the platforms asked
for of an index, then config and layers) through the same service the proxy uses, so
prefetched content is verified, linked and single-flighted exactly like pulled content,
and a second run only fetches what is missing. With `sif`, each image is then converted to
a SIF as a pull of the SIF namespace would (a name in that namespace is converted too).
Progress is reported through callbacks, so the CLI can draw bars while the library stays
free of terminal code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from mirror.errors import InvalidValue, MirrorError
from mirror.proxy.converted import ConvertedImages
from mirror.proxy.image_walk import WalkTally, cache_image
from mirror.proxy.routing import Router
from mirror.proxy.service import ProxyService
from mirror.reference import PLATFORM_RE, Digest, ImageRef, check_reference, is_digest


@dataclass
class ImageResult(WalkTally):
    """What prefetching one image did."""

    reference: str = ""
    error: str | None = None
    sif: str = ""  # the SIF it was converted to: `<namespace...>/<image>:<tag>`

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[str, int, int], None]  # (image, bytes to add to total, bytes done)
Stage = Callable[[str, str], None]  # (image, what it is doing now, e.g. "converting")


def check_request(router: Router, images: list[str], platform: str | None) -> None:
    """Every image name and the platform, checked before anything is drawn or fetched:
    one `InvalidValue` naming each one that cannot be pulled as written."""
    problems = []
    if platform is not None and not PLATFORM_RE.fullmatch(platform):
        problems.append(
            f"--platform {platform!r}: give os/architecture[/variant], e.g. linux/amd64"
        )
    for text in images:
        try:
            ref = ImageRef.parse(text)
            router.route(ref.path)
            check_reference(ref.reference)
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
    sif: bool = False,
    stage: Stage | None = None,
) -> list[ImageResult]:
    """Prefetch `images` (at most `parallel` blob downloads at once); with `sif`, convert
    each to a SIF afterwards (for `platform`, default `[sif] platform`). Never raises for
    one image's failure: it is recorded in that image's result."""
    downloads = asyncio.Semaphore(max(parallel, 1))
    report = progress or (lambda image, total, done: None)
    say = stage or (lambda image, text: None)
    names = service.config.sif.names
    converted = ConvertedImages(service)

    async def one(text: str) -> ImageResult:
        result = ImageResult(reference=text)
        try:
            ref = ImageRef.parse(text)
            repo = service.route(ref.path)
            walk_platform = platform
            sif_platform = (platform or names.default_platform) if sif else None
            if names.is_sif(repo):  # a name in the SIF namespace: its source, converted
                walk_platform = sif_platform = names.platform_of(repo.prefix)
                repo = names.source_of(repo)
            await cache_image(
                service,
                repo,
                ref.reference,
                platform=walk_platform,
                tally=result,
                progress=lambda total, done: report(text, total, done),
                downloads=downloads,
            )
            if sif_platform is not None:
                say(text, "converting to a SIF")
                sif_repo = names.converted(repo, sif_platform)
                tag = ref.reference
                if is_digest(tag):
                    tag = f"sha256-{Digest.parse(tag).hex}"
                await converted.convert(sif_repo, tag)
                result.sif = f"{sif_repo}:{tag}"
        except MirrorError as exc:
            result.error = f"{exc.code}: {exc.message}"
        return result

    try:
        return list(await asyncio.gather(*(one(image) for image in images)))
    finally:
        await converted.close()
