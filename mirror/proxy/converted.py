"""The SIF namespace: `/v2/<namespace>/<image>` serves `<image>` converted to a SIF, as the
ORAS artifact Apptainer pulls.

A tag follows the source tag: the source is resolved through the service (its freshness,
revalidation and stale answers), the platform's manifest picked from an index, and the
SIF of that manifest served, converted first if no instance has yet. The tag
`sha256-<hex>` names the source image by digest (immutable). A digest reference is the
SIF manifest's own digest: clients check that the bytes hash to it. Converted images are
ordinary repositories of the store (`SifNames`), so tags, gc, verify and the catalog treat
them like any cached SIF.
"""

from __future__ import annotations

import json

from mirror.cache.siftree import SifTree
from mirror.cache.store import TagRecord
from mirror.errors import (
    BlobUnknown,
    ConversionRefused,
    ManifestUnknown,
    MirrorError,
    PlatformUnknown,
)
from mirror.manifests import Descriptor, Kind, parse, platform_text
from mirror.metrics import series
from mirror.proxy.conversions import Conversions
from mirror.proxy.image_walk import cache_blob
from mirror.proxy.service import Manifest, ProxyService
from mirror.proxy.sources import BlobSize, CachedBlob
from mirror.reference import OCI_MANIFEST, Digest, Repository, check_tag, is_digest
from mirror.sif_names import source_digest_tag


class ConvertedImages:
    """Manifests, blobs and tags of the SIF namespace's repositories."""

    def __init__(self, service: ProxyService) -> None:
        self._service = service
        self._store = service.store
        self._metadata = service.metadata
        self._names = service.config.sif.names
        self._max_wait = service.config.sif.max_wait_seconds
        tree = service.config.cache.sif_tree
        self._sif_tree = SifTree(tree, service.store) if tree else None
        self.conversions = Conversions(service)

    async def close(self) -> None:
        await self.conversions.close()

    # -- manifests -------------------------------------------------------------------------
    async def get_manifest(self, repo: Repository, reference: str) -> Manifest:
        """The SIF manifest `reference` names in the SIF repository `repo`, for a client:
        a conversion is waited for at most `[sif] max_wait_seconds`."""
        if is_digest(reference):
            manifest = self._linked(repo, Digest.parse(reference))
        else:
            manifest = await self._by_tag(repo, check_tag(reference), self._max_wait)
        self._service.pulls.record(repo, reference)
        return manifest

    async def convert(self, repo: Repository, tag: str) -> Manifest:
        """The SIF manifest of `repo:tag`, converted first if need be however long that
        takes (prefetch: no client waits, no pull is counted)."""
        return await self._by_tag(repo, check_tag(tag), None)

    def _linked(self, repo: Repository, digest: Digest) -> Manifest:
        """A SIF manifest by its own digest, once converted for `repo`."""
        media_type = self._metadata.manifest_media_type(repo, digest)
        body = self._store.read_blob(digest) if media_type is not None else None
        if media_type is None or body is None:
            raise ManifestUnknown(
                f"{repo} has no SIF manifest {digest}: a digest here is the SIF manifest's "
                f"own; to name the source image by its digest, use the tag sha256-{digest.hex}"
            )
        return Manifest(digest, media_type, body)

    async def _by_tag(self, repo: Repository, tag: str, wait: float | None) -> Manifest:
        source = self._names.source_of(repo)
        platform = self._names.platform_of(repo.prefix) or self._names.default_platform
        source_reference = source_digest_tag(tag) or tag
        top = await self._service.get_manifest(source, source_reference, count_pull=False)
        sep = "@" if is_digest(source_reference) else ":"
        describe = f"image {source}{sep}{source_reference} ({platform})"
        image = await self._platform_image(source, top, platform, describe)
        digest = await self.conversions.sif_manifest(source, image, describe, wait)
        return self._tagged(repo, tag, digest, top.warning)

    async def _platform_image(
        self, source: Repository, top: Manifest, platform: str, describe: str
    ) -> Digest:
        """The digest of `top`'s image manifest for `platform`: its index's child, or
        itself when its config is for that platform."""
        parsed = parse(top.body, top.media_type)
        if parsed.kind is Kind.INDEX:
            child = _child_for(parsed.manifests, platform)
            if child is None:
                offered = sorted({platform_text(c.platform) for c in parsed.manifests} - {""})
                raise PlatformUnknown(
                    f"{describe}: the index has no image for {platform}; it has "
                    f"{', '.join(offered) or 'no platforms'}"
                )
            return child.digest
        if parsed.kind is not Kind.IMAGE or parsed.config is None:
            raise ConversionRefused(
                f"{describe}: a {parsed.kind.value} manifest, not an image; only images "
                "are converted (a SIF artifact is pulled as it is, without the namespace)"
            )
        await cache_blob(self._service, source, parsed.config.digest)
        config = _config_platform(self._store.read_blob(parsed.config.digest) or b"")
        if config and not _matches(platform, config):
            raise PlatformUnknown(f"{describe}: the image is for {config}, not {platform}")
        return top.digest

    def _tagged(self, repo: Repository, tag: str, digest: Digest, warning: str | None) -> Manifest:
        """Link the SIF manifest to `repo` and point `tag` at it (once; the SIF tree too)."""
        body = self._store.read_blob(digest)
        if body is None:  # evicted this very moment
            raise ManifestUnknown(f"the SIF manifest {digest} of {repo}:{tag} was just evicted")
        with self._store.refusals.tolerated(f"the tag {repo}:{tag}"):
            # The store's tag, not this node's memory of it: gc may have evicted it.
            record = self._metadata.tag(repo, tag, from_store=True)
            if record is None or record.digest != digest:
                parsed = parse(body, OCI_MANIFEST)
                for blob in parsed.blob_digests:  # links gc removed, whatever the index says
                    self._store.link_blob(repo, blob)
                self._metadata.link_manifest(repo, digest, OCI_MANIFEST, parsed)
                record = TagRecord(digest, OCI_MANIFEST, self._service.clock())
                self._metadata.put_tag(repo, tag, record)
                self._metadata.forget_repositories()
                self._publish(repo, tag, body)
        return Manifest(digest, OCI_MANIFEST, body, warning)

    def _publish(self, repo: Repository, tag: str, body: bytes) -> None:
        """The SIF tree's file of a tag (not of a `sha256-<hex>` tag, which is no name)."""
        if self._sif_tree is None or source_digest_tag(tag) is not None:
            return
        platform = self._names.platform_of(repo.prefix)
        label = "" if platform == self._names.default_platform else platform or ""
        layer = parse(body, OCI_MANIFEST).layers[0].digest
        self._sif_tree.publish(self._names.source_of(repo), tag, layer, label)

    # -- blobs: only what a conversion stored and linked ---------------------------------
    async def blob_size(self, repo: Repository, digest: Digest) -> BlobSize:
        return BlobSize(self._stored_size(repo, digest), series.HIT)

    async def open_blob(
        self, repo: Repository, digest: Digest, *, uncached: bool = True
    ) -> CachedBlob:
        size = self._stored_size(repo, digest)
        try:
            return CachedBlob(digest, open(self._store.blob_path(digest), "rb"), size)
        except FileNotFoundError:
            raise BlobUnknown(f"blob {digest} of {repo} was just evicted") from None

    def _stored_size(self, repo: Repository, digest: Digest) -> int:
        size = self._store.blob_size(digest)
        if size is None or not self._metadata.may_serve_blob(repo, digest):
            raise BlobUnknown(f"blob {digest} is unknown to {repo}")
        return size

    # -- tags ------------------------------------------------------------------------------
    async def list_tags(self, repo: Repository) -> list[str]:
        """The source's tags (each converts on its first pull) and those converted here."""
        converted = self._metadata.tags(repo)
        try:
            source_tags = await self._service.list_tags(self._names.source_of(repo))
        except MirrorError:
            if not converted:
                raise
            source_tags = []
        return sorted(set(source_tags) | set(converted))


def _child_for(children: tuple[Descriptor, ...], platform: str) -> Descriptor | None:
    """The index entry for `platform`: exactly, or without a variant when none is asked
    for (`linux/arm64` takes `linux/arm64/v8`)."""
    exact = [c for c in children if platform_text(c.platform) == platform]
    if exact:
        return exact[0]
    return next((c for c in children if _matches(platform, platform_text(c.platform))), None)


def _matches(wanted: str, offered: str) -> bool:
    return offered == wanted or (wanted.count("/") == 1 and offered.startswith(wanted + "/"))


def _config_platform(config_bytes: bytes) -> str:
    """`os/architecture[/variant]` of an image config, or "" when it says none."""
    try:
        document = json.loads(config_bytes)
    except (ValueError, UnicodeDecodeError):
        return ""
    return platform_text(document) if isinstance(document, dict) else ""
