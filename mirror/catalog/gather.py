"""The model of one repository, gathered from the content store: its tags, the facts of
every manifest they reach, a summary per tag, and the row the index lists it by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mirror.cache.pulls import NEVER_PULLED, PullCount
from mirror.cache.siftree import sif_tree_path
from mirror.cache.store import ContentStore
from mirror.catalog.facts import OCI_KEY_PREFIX, manifest_facts
from mirror.catalog.model import (
    KIND_LABELS,
    ManifestFacts,
    ManifestSummary,
    Pushed,
    Referrer,
    RepoRow,
    RepoView,
    SifLink,
    TagView,
    iso_text,
    pages_dir,
)
from mirror.errors import MirrorError
from mirror.reference import Digest, Repository
from mirror.sif_names import SifNames, source_digest_tag

# Per tag or digest of a repository, over every node.
PullCounts = dict[str, PullCount]


class FactsCache:
    """Facts by manifest digest for one render. Not kept between renders: a repository
    whose signature is unchanged is not gathered at all, and one that changed needs only
    its own few manifests, which are cheaper to read again than to keep in a database."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._facts: dict[str, ManifestFacts] = {}

    def get(self, digest: str, media_type: str) -> ManifestFacts:
        key = f"{digest}:{media_type}"
        facts = self._facts.get(key)
        if facts is None:
            facts = manifest_facts(self._store, Digest.parse(digest), media_type)
            self._facts[key] = facts
        return facts


@dataclass(frozen=True)
class Conversions:
    """How converted images relate to their sources: the SIF namespace's names, and the
    SIF tree's directory (None when `cache.sif_tree` is off)."""

    names: SifNames
    tree: Path | None = None

    def links(
        self, store: ContentStore, repo: Repository, related: tuple[Repository, ...]
    ) -> dict[str, Any]:
        """The `RepoView` fields linking `repo` to the `related` repositories: the SIFs
        converted from it, or the image it was converted from (with its SIF-tree files)."""
        if not self.names.is_sif(repo):
            return {"converted_to": tuple(self._link(store, sif) for sif in related)}
        source = self.names.source_of(repo)
        platform = self.names.platform_of(repo.prefix) or ""
        label = "" if platform == self.names.default_platform else platform
        files = {
            tag: str(self.tree / sif_tree_path(source, tag, label))
            for tag in store.list_tags(repo)
            if self.tree is not None and source_digest_tag(tag) is None
        }
        page = f"{pages_dir(source)}/index.html" if source in related else ""  # else unlisted
        return {"converted_from": SifLink(str(source), page, platform), "sif_files": files}

    def _link(self, store: ContentStore, sif: Repository) -> SifLink:
        tags = tuple(store.list_tags(sif))
        platform = self.names.platform_of(sif.prefix) or ""
        return SifLink(str(sif), f"{pages_dir(sif)}/index.html", platform, tags)


def gather(
    store: ContentStore,
    facts: FactsCache,
    repo: Repository,
    pulls: PullCounts,
    conversions: Conversions | None = None,
    related: tuple[Repository, ...] = (),
    namespace: str = "",
) -> RepoView:
    """Everything the pages of `repo` show; `pulls` are its pull counts, `related` the
    repositories converted from it, or the one it was converted from; `namespace` is
    that of a local repository (who pushed its manifests, and their referrers)."""
    manifests: dict[str, ManifestFacts] = {}
    tagged = store.tag_records(repo)
    for record in tagged.values():
        _add_facts(manifests, facts, store, repo, str(record.digest), record.media_type)
    tags = []
    for tag, record in tagged.items():
        count, last = pulls.get(tag, NEVER_PULLED)
        digest = str(record.digest)
        tags.append(
            TagView(
                tag,
                digest,
                record.media_type,
                _iso(record.confirmed_at),
                count,
                _iso(last),
                summarize(manifests, digest),
            )
        )
    links = conversions.links(store, repo, related) if conversions is not None else {}
    if namespace:
        links.update(namespace=namespace, **_pushes(store, repo, manifests))
    return RepoView(repo, tuple(tags), manifests, **links)


def _pushes(
    store: ContentStore, repo: Repository, manifests: dict[str, ManifestFacts]
) -> dict[str, Any]:
    """The `RepoView` fields of a local repository: who pushed each manifest shown, and
    the artifacts pushed for it (read from the store's referrer entries)."""
    pushed = {}
    referrers = {}
    for digest in sorted(manifests):
        record = _pushed(store, repo, digest)
        if record is not None:
            pushed[digest] = record
        found = tuple(
            _referrer(store, repo, d) for d in store.referrers(repo, Digest.parse(digest))
        )
        if found:
            referrers[digest] = found
    return {"pushed": pushed, "referrers": referrers}


def _pushed(store: ContentStore, repo: Repository, digest: str) -> Pushed | None:
    record = store.read_push_record(repo, Digest.parse(digest))
    return Pushed(record.user, _iso(record.at)) if record is not None else None


def _referrer(store: ContentStore, repo: Repository, descriptor: dict[str, Any]) -> Referrer:
    """One referrers entry; its fields came from a client's manifest, so each is checked."""
    digest = descriptor.get("digest")
    size = descriptor.get("size")
    kind = descriptor.get("artifactType") or descriptor.get("mediaType")
    pushed = None
    if isinstance(digest, str):
        try:
            pushed = _pushed(store, repo, digest)
        except MirrorError:
            digest = None
    return Referrer(
        kind if isinstance(kind, str) else "unknown",
        digest if isinstance(digest, str) else "unknown",
        size if isinstance(size, int) and not isinstance(size, bool) else None,
        pushed,
    )


def _add_facts(
    manifests: dict[str, ManifestFacts],
    facts: FactsCache,
    store: ContentStore,
    repo: Repository,
    digest: str,
    media_type: str,
) -> None:
    """The facts of `digest` and, for an index, of each of its children."""
    if digest in manifests:
        return
    found = facts.get(digest, media_type)
    manifests[digest] = found
    for child in found.children or ():
        child_type = store.manifest_media_type(repo, Digest.parse(child.digest))
        _add_facts(manifests, facts, store, repo, child.digest, child_type or child.media_type)


def summarize(manifests: dict[str, ManifestFacts], digest: str) -> ManifestSummary:
    """One manifest in a line; an index takes sizes and dates from its children."""
    found = manifests[digest]
    children = [manifests[child.digest] for child in found.children or ()]
    sizes = [child.total_size for child in children] or [found.total_size]
    known = [size for size in sizes if size is not None]
    created = found.created or max((c.created for c in children if c.created), default=None)
    meta = {
        **(found.image.labels if found.image else {}),
        **(found.sif.labels if found.sif else {}),
        **found.annotations,
    }
    return ManifestSummary(
        kind=found.kind,
        platforms=found.platforms,
        size=sum(known) if len(known) == len(sizes) else None,
        created=created,
        signed=bool(found.sif and found.sif.signed),
        encrypted=bool(found.sif and found.sif.encrypted),
        title=meta.get(OCI_KEY_PREFIX + "title", ""),
        description=meta.get(OCI_KEY_PREFIX + "description", ""),
        damaged=bool(found.problems),
    )


def repo_row(view: RepoView) -> RepoRow:
    """`view` as the index lists it: its newest tag's size, date, title and description."""
    summaries = [tag.summary for tag in view.tags]
    newest = _newest_tag(view)
    latest = newest.summary
    sif = view.manifests[newest.digest].sif
    pushed = view.pushed.get(newest.digest)
    return RepoRow(
        prefix=view.prefix,
        name=view.name,
        path=view.path,
        page=f"{view.directory}/index.html",
        tag_names=tuple(tag.name for tag in view.tags),
        kinds=tuple(sorted({KIND_LABELS[s.kind] for s in summaries})),
        platforms=tuple(sorted({p for s in summaries for p in s.platforms})),
        size=latest.size,
        created=latest.created,
        last_pulled=max((t.last_pulled for t in view.tags if t.last_pulled), default=None),
        pulls=sum(tag.pulls for tag in view.tags),
        signed=any(s.signed for s in summaries),
        encrypted=any(s.encrypted for s in summaries),
        title=latest.title,
        description=latest.description,
        damaged=any(s.damaged for s in summaries),
        namespace=view.namespace,
        pushed_by=pushed.user if pushed else None,
        pushed_at=pushed.at if pushed else None,
        sif_signatures=len(sif.signatures) if sif else 0,
        referrers=len(view.referrers.get(newest.digest, ())),
    )


def _newest_tag(view: RepoView) -> TagView:
    """`latest` if there is one, else the tag whose manifest was created last."""
    for tag in view.tags:
        if tag.name == "latest":
            return tag
    return max(view.tags, key=lambda t: (view.manifests[t.digest].created or "", t.name))


def _iso(timestamp: float) -> str | None:
    """Unix seconds as the pages show times, to the second; 0 means never."""
    if not timestamp:
        return None
    return iso_text(datetime.fromtimestamp(timestamp, timezone.utc).replace(microsecond=0))
