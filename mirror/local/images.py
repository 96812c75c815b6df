"""The local namespace's images: pulled from the store alone (never an upstream, so always
available offline, and no tag TTL), pushed by manifest PUT, removed by DELETE, and listed
by the referrers API.

Decision on caching: reads of local tags and manifest links go to the store, not to the
node-local `MetadataCache`. A re-push or DELETE on another instance is then seen at once
by every instance (a node-local cache could keep answering for a deleted manifest or an
old tag until something overwrote it). Writes still go through the `MetadataCache`, so
its entries (which blob links and converted images use) are overwritten or forgotten on
the instance that writes. The cost is one small file read per tag or digest, on a
namespace that sees far fewer pulls than the cached upstreams. Blob links are only ever
added by pushes, so `may_serve_blob` keeps its node-local answer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import IO, Any

from mirror.cache.metadata import MetadataCache
from mirror.cache.refusals import raising_store_refused
from mirror.cache.store import ContentStore, PushRecord, TagRecord
from mirror.cache.usage import StoreUsage
from mirror.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestUnknown,
    NameUnknown,
)
from mirror.local.pushed_manifest import PushedManifest, read_pushed_manifest
from mirror.manifests import ParsedManifest
from mirror.manifests import parse as parse_manifest
from mirror.reference import Digest, Repository, check_tag, is_digest


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    body: bytes


class LocalImages:
    """Pull, push and delete of manifests and tags in the local namespace (blob uploads are
    elsewhere: they end with a blob linked to its repository, which is all this needs)."""

    def __init__(
        self,
        store: ContentStore,
        metadata: MetadataCache,
        read_manifest: Callable[[Digest], bytes | None],
        executor: Executor,
        clock: Callable[[], float],
        usage: StoreUsage | None = None,
    ) -> None:
        """`read_manifest`: a manifest's bytes by digest (the service's memory, else the
        store); `executor`: where hashing and content writes run; `usage`: the store's
        size for /metrics, told of each manifest new to the store."""
        self._store = store
        self._metadata = metadata
        self._read_manifest = read_manifest
        self._executor = executor
        self._clock = clock
        self._usage = usage

    # -- pulls -----------------------------------------------------------------------------
    def get_manifest(self, repo: Repository, reference: str) -> StoredManifest:
        """`repo`'s manifest by tag or digest; MANIFEST_UNKNOWN when it has none."""
        unknown = ManifestUnknown(f"manifest {reference!r} is unknown to {repo}")
        if is_digest(reference):
            digest = Digest.parse(reference)
            media_type = self._linked_media_type(repo, digest)
        else:
            record = self._metadata.tag(repo, check_tag(reference), from_store=True)
            if record is None:
                raise unknown
            digest, media_type = record.digest, record.media_type
        body = self._read_manifest(digest)
        if media_type is None or body is None:
            raise unknown
        return StoredManifest(digest, media_type, body)

    def blob_size(self, repo: Repository, digest: Digest) -> int:
        size = (
            self._store.blob_size(digest) if self._metadata.may_serve_blob(repo, digest) else None
        )
        if size is None:
            raise BlobUnknown(f"blob {digest} is unknown to {repo}")
        return size

    def open_blob(self, repo: Repository, digest: Digest) -> tuple[IO[bytes], int]:
        """The blob's file, open for reading, and its size; BLOB_UNKNOWN unless it is
        stored and linked to `repo`."""
        size = self.blob_size(repo, digest)
        try:
            return open(self._store.blob_path(digest), "rb"), size
        except FileNotFoundError:  # gc removed it since
            raise BlobUnknown(f"blob {digest} is unknown to {repo}") from None

    def list_tags(self, repo: Repository) -> list[str]:
        """`repo`'s tags; NAME_UNKNOWN for a repository that holds no manifest."""
        tags = self._store.list_tags(repo)
        if not tags and not self._store.linked_manifests(repo):
            raise NameUnknown(f"repository {repo} is unknown")
        return tags

    def referrers(
        self, repo: Repository, subject: Digest, artifact_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Descriptors of `repo`'s manifests whose subject is `subject`, with `artifact_type`
        only those of that type; empty when there are none (even for an unknown subject)."""
        found = self._store.referrers(repo, subject)
        if artifact_type is not None:
            found = [entry for entry in found if entry.get("artifactType") == artifact_type]
        return found

    # -- pushes ----------------------------------------------------------------------------
    async def put_manifest(
        self, repo: Repository, reference: str, body: bytes, content_type: str, user: str | None
    ) -> PushedManifest:
        """Store a pushed manifest byte-exact and link it (and tag it, when `reference` is a
        tag). Nothing is stored when it is refused: MANIFEST_INVALID, DIGEST_INVALID (a
        digest reference that is not the body's), MANIFEST_BLOB_UNKNOWN (a blob or child
        manifest not in `repo`; a `subject` need not be)."""
        loop = asyncio.get_running_loop()
        digest = Digest(
            await loop.run_in_executor(self._executor, lambda: hashlib.sha256(body).hexdigest())
        )
        tag = None
        if is_digest(reference):
            if Digest.parse(reference) != digest:
                raise DigestInvalid(f"the manifest's digest is {digest}, not {reference[:80]}")
        else:
            tag = check_tag(reference)
        pushed = read_pushed_manifest(body, digest, content_type)
        self._check_references(repo, pushed.parsed)
        now = self._clock()
        with raising_store_refused():
            if await loop.run_in_executor(self._executor, self._store.put_bytes, digest, body):
                if self._usage is not None:
                    self._usage.added(digest, len(body))
            self._metadata.link_manifest(repo, digest, pushed.media_type, pushed.parsed)
            self._store.write_push_record(repo, digest, PushRecord(user, now))
            if pushed.subject is not None:
                descriptor = pushed.referrer_descriptor()
                self._store.link_referrer(repo, pushed.subject, digest, descriptor)
            if tag is not None:
                self._metadata.put_tag(repo, tag, TagRecord(digest, pushed.media_type, now))
        self._metadata.forget_repositories()
        return pushed

    def _check_references(self, repo: Repository, parsed: ParsedManifest) -> None:
        """MANIFEST_BLOB_UNKNOWN naming the first blob or child manifest `repo` lacks (asked
        of the store: gc may have removed a link this node's cache remembers)."""
        for blob in parsed.blob_digests:
            if not self._store.blob_linked(repo, blob) or self._store.blob_size(blob) is None:
                raise ManifestBlobUnknown(
                    f"blob {blob} is not in {repo}: push it before the manifest", detail=str(blob)
                )
        for child in parsed.manifests:
            if self._linked_media_type(repo, child.digest) is None:
                raise ManifestBlobUnknown(
                    f"manifest {child.digest} is not in {repo}: push it before the index",
                    detail=str(child.digest),
                )

    # -- deletes ---------------------------------------------------------------------------
    def delete(self, repo: Repository, reference: str) -> None:
        """A tag: remove the tag alone. A digest: unlink the manifest from `repo` with every
        tag pointing at it, its push record and its entry among its subject's referrers;
        the content stays until gc. MANIFEST_UNKNOWN when `repo` has no such thing."""
        if not is_digest(reference):
            tag = check_tag(reference)
            if self._metadata.tag(repo, tag, from_store=True) is None:
                raise ManifestUnknown(f"tag {tag!r} is unknown to {repo}")
            self._metadata.forget_tag(repo, tag)
            return
        digest = Digest.parse(reference)
        if self._linked_media_type(repo, digest) is None:
            raise ManifestUnknown(f"manifest {digest} is unknown to {repo}")
        for tag, record in self._store.tag_records(repo).items():
            if record.digest == digest:
                self._metadata.forget_tag(repo, tag)
        body = self._read_manifest(digest)
        subject = parse_manifest(body, "").subject if body is not None else None
        if subject is not None:
            self._store.unlink_referrer(repo, subject.digest, digest)
        self._store.remove_push_record(repo, digest)
        self._metadata.unlink_manifest(repo, digest)
        self._metadata.forget_repositories()

    def _linked_media_type(self, repo: Repository, digest: Digest) -> str | None:
        return self._metadata.manifest_media_type(repo, digest, from_store=True)
