"""`mirror gc`: clean up what pushes leave behind, and evict the least recently pulled
cached images until the cache fits a size.

The unit of eviction is an image: a tag (or a manifest pulled only by digest) with
everything it references (index children, configs, layers). A blob is deleted only when
no kept image references it, so expiry never corrupts a blob shared with another image.
Pinned images are never evicted. A blob still being filled is not in the store until it
is complete, so it is never touched. Recency is the newest of the last pull recorded
on any node and the last time the upstream confirmed the tag.

Local images (`[local] prefix`) are the site's originals, not cached copies: eviction by
size or age never takes a tagged local image, nor a local manifest reachable only by
digest (index children, referrers such as signatures, images pushed by digest), nor a
blob they hold. Every run, with or without a size limit, removes upload sessions
untouched for `[local] upload_ttl_hours`, unlinks from a local repository a blob none of
its manifests references once the link is that old (a push's manifest comes after its
blobs), and deletes a blob that no repository links or references any more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mirror.cache.metadata import MetadataCache
from mirror.cache.pulls import NEVER_PULLED, PullStats
from mirror.cache.store import ContentStore
from mirror.manifests import closure
from mirror.reference import Digest, Repository, is_digest
from mirror.units import human_size


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


@dataclass(frozen=True)
class GcRules:
    """What one run may remove: `upload_ttl` (seconds) bounds the age of uploads and of
    unreferenced local blob links; eviction runs only with a `max_size`."""

    upload_ttl: float
    max_size: int | None = None
    older_than: float | None = None  # seconds: only images unused for this long go
    is_local: Callable[[Repository], bool] = lambda repo: False
    pinned: Callable[[Image], bool] = lambda image: False


@dataclass
class GcPlan:
    total_before: int
    uploads: dict[str, int] = field(default_factory=dict)  # abandoned upload id -> bytes
    unlink: list[tuple[Repository, str]] = field(default_factory=list)  # stale local links
    unreferenced: set[str] = field(default_factory=set)  # blob hexes nothing holds
    evict: list[Image] = field(default_factory=list)
    delete: dict[str, int] = field(default_factory=dict)  # blob hex -> size

    @property
    def freed(self) -> int:
        return sum(self.delete.values())


def plan(store: ContentStore, pulls: PullStats, rules: GcRules, now: float) -> GcPlan:
    """Choose what goes: abandoned uploads, stale local blob links, blobs nothing links or
    references, then (with `max_size`) images, oldest first, until the cache fits."""
    sizes = {blob.digest.hex: blob.size for blob in store.blobs()}
    images = list(_images(store, pulls))
    result = GcPlan(total_before=sum(sizes.values()))
    cutoff = now - rules.upload_ttl
    result.uploads = _abandoned_uploads(store, cutoff)
    holders = Counter(hex_digest for image in images for hex_digest in image.blobs)
    links = {
        repo: {d.hex for d in store.linked_blobs(repo)}
        for repo in store.list_repositories(with_blob_links=True)
    }
    for repo, linked in links.items():
        if rules.is_local(repo):
            stale = _stale_links(store, repo, linked, cutoff)
            result.unlink += [(repo, hex_digest) for hex_digest in sorted(stale)]
            linked -= stale
    linked_anywhere = set().union(*links.values())
    for hex_digest in sorted(set(sizes) - set(holders) - linked_anywhere):
        stored_at = store.blob_stored_at(Digest(hex_digest))
        if stored_at is not None and stored_at < cutoff:
            result.unreferenced.add(hex_digest)
            result.delete[hex_digest] = sizes[hex_digest]
    if rules.max_size is not None:
        local_links = set().union(*(v for repo, v in links.items() if rules.is_local(repo)))
        _evict(result, rules, rules.max_size, sizes, images, holders, local_links, now)
    return result


def _evict(
    result: GcPlan,
    rules: GcRules,
    max_size: int,
    sizes: dict[str, int],
    images: list[Image],
    holders: Counter[str],
    local_links: set[str],
    now: float,
) -> None:
    """Add images and blobs to `result`, oldest first, until the cache is at most
    `max_size`; never a local image, nor a blob a local repository holds."""
    size = result.total_before - result.freed
    orphans = set(sizes) - set(holders) - set(result.delete) - local_links
    for hex_digest in sorted(orphans):  # blobs no image holds: first to go
        if size <= max_size:
            return
        result.delete[hex_digest] = sizes[hex_digest]
        size -= sizes[hex_digest]
    for image in sorted(images, key=lambda i: (i.last_used, str(i))):
        if size <= max_size:
            return
        if rules.is_local(image.repo) or rules.pinned(image):
            continue
        if rules.older_than is not None and now - image.last_used < rules.older_than:
            continue
        result.evict.append(image)
        for hex_digest in image.blobs:
            holders[hex_digest] -= 1
            if holders[hex_digest] == 0 and hex_digest in sizes:
                result.delete[hex_digest] = sizes[hex_digest]
                size -= sizes[hex_digest]


def apply(store: ContentStore, result: GcPlan, metadata: MetadataCache | None = None) -> None:
    """Remove abandoned uploads and stale local links (from this node's metadata cache
    too), untag evicted images, unlink what their repositories no longer hold, delete
    blobs."""
    for upload_id in result.uploads:
        store.delete_upload(upload_id)
    for repo, hex_digest in result.unlink:
        (metadata or store).unlink_blob(repo, Digest(hex_digest))
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


def report(result: GcPlan, max_size: int | None, dry_run: bool) -> list[str]:
    """What a run did (or, dry, would do), a line each, for `mirror gc` to print."""
    lines = [f"{'would evict' if dry_run else 'evicted'} {image}" for image in result.evict]
    upload_bytes = human_size(sum(result.uploads.values()))
    lines.append(
        f"{'would remove' if dry_run else 'removed'} {len(result.uploads)} abandoned "
        f"uploads ({upload_bytes}); {'would unlink' if dry_run else 'unlinked'} "
        f"{len(result.unlink)} local blobs no manifest references; "
        f"{len(result.unreferenced)} blobs nothing links or references"
    )
    after = result.total_before - result.freed
    summary = (
        f"{'would free' if dry_run else 'freed'} {human_size(result.freed)} "
        f"({len(result.delete)} blobs, {len(result.evict)} images); cache "
        f"{human_size(result.total_before)} -> {human_size(after)}"
    )
    if max_size is not None and after > max_size:
        summary += (
            f", still above {human_size(max_size)}: the rest is local images, pinned, "
            "newer than --older-than, or shared with kept images"
        )
    return lines + [summary]


def _abandoned_uploads(store: ContentStore, cutoff: float) -> dict[str, int]:
    """Upload sessions (torn ones too) untouched since `cutoff`, with their bytes."""
    found = {}
    for upload_id in store.upload_ids():
        touched_at = store.upload_touched_at(upload_id)
        if touched_at is not None and touched_at < cutoff:
            found[upload_id] = store.upload_bytes(upload_id)
    return found


def _stale_links(
    store: ContentStore, repo: Repository, linked: set[str], cutoff: float
) -> set[str]:
    """Blobs linked to `repo` before `cutoff` that none of its manifests references."""
    referenced: set[str] = set()
    for digest in store.linked_manifests(repo):
        referenced |= _closure(store, digest)[0]
    stale = set()
    for hex_digest in linked - referenced:
        linked_at = store.blob_linked_at(repo, Digest(hex_digest))
        if linked_at is not None and linked_at < cutoff:
            stale.add(hex_digest)
    return stale


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
