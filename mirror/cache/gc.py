"""`mirror gc`: evict the least recently pulled images until the cache fits a size.

The unit of eviction is an image: a tag (or a manifest pulled only by digest) with
everything it references (index children, configs, layers). A blob is deleted only when
no kept image references it, so expiry never corrupts a blob shared with another image.
Pinned images are never evicted. A blob still being filled is not in the store until it
is complete, so it is never touched. Recency is the newest of the last pull recorded
on any node and the last time the upstream confirmed the tag.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mirror.cache.pulls import NEVER_PULLED, PullStats
from mirror.cache.store import ContentStore
from mirror.manifests import closure
from mirror.reference import Digest, Repository, is_digest


@dataclass(frozen=True)
class Image:
    repo: Repository
    reference: str  # a tag, or a digest for manifests no tag points at
    last_used: float
    blobs: frozenset[str]  # hex digests: manifests and blobs it holds on to
    manifests: frozenset[str]

    def __str__(self) -> str:
        sep = "@" if is_digest(self.reference) else ":"
        return f"{self.repo}{sep}{self.reference}"


@dataclass
class GcPlan:
    total_before: int
    evict: list[Image] = field(default_factory=list)
    delete: dict[str, int] = field(default_factory=dict)  # blob hex -> size

    @property
    def freed(self) -> int:
        return sum(self.delete.values())


def plan(
    store: ContentStore,
    pulls: PullStats,
    max_size: int,
    older_than: float | None,
    now: float,
    pinned: Callable[[Image], bool] = lambda image: False,
) -> GcPlan:
    """Choose images to evict, oldest first, until the cache is at most `max_size`."""
    sizes = {blob.digest.hex: blob.size for blob in store.blobs()}
    images = list(_images(store, pulls))
    result = GcPlan(total_before=sum(sizes.values()))
    holders = Counter(hex_digest for image in images for hex_digest in image.blobs)
    orphans = set(sizes) - set(holders)
    size = result.total_before
    for hex_digest in sorted(orphans):  # blobs no image holds: first to go
        if size <= max_size:
            break
        result.delete[hex_digest] = sizes[hex_digest]
        size -= sizes[hex_digest]
    for image in sorted(images, key=lambda i: (i.last_used, str(i))):
        if size <= max_size:
            break
        if pinned(image) or (older_than is not None and now - image.last_used < older_than):
            continue
        result.evict.append(image)
        for hex_digest in image.blobs:
            holders[hex_digest] -= 1
            if holders[hex_digest] == 0 and hex_digest in sizes:
                result.delete[hex_digest] = sizes[hex_digest]
                size -= sizes[hex_digest]
    return result


def apply(store: ContentStore, result: GcPlan) -> None:
    """Untag evicted images, unlink what their repositories no longer hold, delete blobs."""
    evicted = {(image.repo, image.reference) for image in result.evict}
    for image in result.evict:
        if not is_digest(image.reference):
            store.untag(image.repo, image.reference)
    kept = {
        (image.repo, hex_digest)
        for image in _images(store, None)
        if (image.repo, image.reference) not in evicted
        for hex_digest in image.blobs
    }
    for image in result.evict:
        for hex_digest in image.blobs:
            if (image.repo, hex_digest) not in kept:
                store.unlink_manifest(image.repo, Digest(hex_digest))
                store.unlink_blob(image.repo, Digest(hex_digest))
    for hex_digest in result.delete:
        store.delete_blob(Digest(hex_digest))


def _images(store: ContentStore, pulls: PullStats | None) -> Iterator[Image]:
    """Every tag of every repository, and every manifest only a digest pull holds."""
    for repo in store.list_repositories():
        counts = pulls.counts(repo) if pulls is not None else {}
        tagged: set[str] = set()
        for tag, record in store.tag_records(repo).items():
            blobs, manifests = _closure(store, record.digest)
            tagged |= manifests
            last = max(counts.get(tag, NEVER_PULLED).last_pulled, record.confirmed_at)
            yield Image(repo, tag, last, frozenset(blobs), frozenset(manifests))
        for digest in store.linked_manifests(repo):
            if digest.hex in tagged or store.blob_size(digest) is None:
                continue
            blobs, manifests = _closure(store, digest)
            if (manifests - {digest.hex}) & tagged:
                continue
            linked_at = store.manifest_linked_at(repo, digest) or 0.0
            last = max(counts.get(str(digest), NEVER_PULLED).last_pulled, linked_at)
            yield Image(repo, str(digest), last, frozenset(blobs), frozenset(manifests))


def _closure(store: ContentStore, digest: Digest) -> tuple[set[str], set[str]]:
    """Hex digests of everything an image holds on to, and of its manifests alone."""
    manifests, blobs = closure(digest, store.read_blob)
    held = {d.hex for d in manifests + blobs}
    return held, {d.hex for d in manifests}
