"""The metadata cache: a node-local read-through cache of the store's repository metadata.

It answers the hot questions (what does this tag point at, may this repository serve this
digest, what media type does this manifest have) without filesystem metadata operations,
which are slow on Lustre and GPFS. It is only ever a cache: positive answers are copied from
the store, misses fall through to the store (so links written by another instance are seen),
and deleting it loses nothing but this node's pull counts, which share its database
(`pulls.py`). SQLite's WAL does not work on network filesystems, which is why the database
lives on node-local disk, in the directory of the config key `cache.index_dir` (the key keeps
the name from when this was called the metadata index: sites script against it).
"""

from __future__ import annotations

import time

import diskcache

from mirror.cache.store import ContentStore, TagRecord
from mirror.manifests import ParsedManifest
from mirror.reference import Digest, Repository

_REPOSITORIES_TTL_SECONDS = 30.0  # how long a scan of the store's repositories is reused


class MetadataCache:
    """Tags, manifest links and blob links of repositories, as the store holds them."""

    def __init__(self, db: diskcache.Cache, store: ContentStore) -> None:
        self._db = db
        self._store = store

    # -- tags ------------------------------------------------------------------------------
    def tag(self, repo: Repository, tag: str, *, from_store: bool = False) -> TagRecord | None:
        """The tag record; `from_store` skips this cache to see another instance's update
        (or removal)."""
        key = ("tag", repo.prefix, repo.name, tag)
        if not from_store:
            record = self._db.get(key)
            if record is not None:
                return record
        record = self._store.read_tag(repo, tag)
        if record is not None:
            self._db.set(key, record)
        elif from_store:
            self._db.delete(key)
        return record

    def put_tag(self, repo: Repository, tag: str, record: TagRecord) -> None:
        self._store.write_tag(repo, tag, record)
        self._db.set(("tag", repo.prefix, repo.name, tag), record)

    def forget_tag(self, repo: Repository, tag: str) -> None:
        """Remove the tag from the store and from this cache."""
        self._store.untag(repo, tag)
        self._db.delete(("tag", repo.prefix, repo.name, tag))

    def tags(self, repo: Repository) -> list[str]:
        return self._store.list_tags(repo)

    # -- manifests and blobs a repository may serve ----------------------------------------
    def manifest_media_type(
        self, repo: Repository, digest: Digest, *, from_store: bool = False
    ) -> str | None:
        """The media type of a manifest `repo` has, None if it has none; `from_store`
        skips this cache to see another instance's removal."""
        key = ("manifest", repo.prefix, repo.name, digest.hex)
        media_type = None if from_store else self._db.get(key)
        if media_type is None:
            media_type = self._store.manifest_media_type(repo, digest)
            if media_type is not None:
                self._db.set(key, media_type)
            elif from_store:
                self._db.delete(key)
        return media_type

    def link_manifest(
        self, repo: Repository, digest: Digest, media_type: str, parsed: ParsedManifest
    ) -> None:
        """Record that `repo` has this manifest, and what it lets `repo` serve: its blobs,
        and for an index its child manifests (with the type the index gives them)."""
        for child in parsed.manifests:
            if self.manifest_media_type(repo, child.digest) is None and child.media_type:
                self._store.link_manifest(repo, child.digest, child.media_type)
        for blob_digest in parsed.blob_digests:
            self.link_blob(repo, blob_digest)
        self._store.link_manifest(repo, digest, media_type)
        self._db.set(("manifest", repo.prefix, repo.name, digest.hex), media_type)

    def unlink_manifest(self, repo: Repository, digest: Digest) -> None:
        """Remove the manifest's link to `repo` from the store and from this cache (the
        blobs it let `repo` serve stay linked, like its content: gc decides about those)."""
        self._store.unlink_manifest(repo, digest)
        self._db.delete(("manifest", repo.prefix, repo.name, digest.hex))

    def may_serve_blob(self, repo: Repository, digest: Digest) -> bool:
        key = ("blob", repo.prefix, repo.name, digest.hex)
        if key in self._db:
            return True
        if self._store.blob_linked(repo, digest):
            self._db.set(key, True)
            return True
        return False

    def link_blob(self, repo: Repository, digest: Digest) -> None:
        key = ("blob", repo.prefix, repo.name, digest.hex)
        if key not in self._db:
            self._store.link_blob(repo, digest)
            self._db.set(key, True)

    def link_pushed_blob(self, repo: Repository, digest: Digest) -> None:
        """A blob just pushed to `repo`: always written through to the store (gc on another
        node may have taken back a link this node remembers) with a fresh time, so gc
        gives the push its manifest's grace period again."""
        self._store.link_blob(repo, digest, refresh=True)
        self._db.set(("blob", repo.prefix, repo.name, digest.hex), True)

    def unlink_blob(self, repo: Repository, digest: Digest) -> None:
        """Take back a blob link (gc), here and in the store; other nodes' caches keep
        theirs, so whoever serves a blob also checks that the store holds it."""
        self._store.unlink_blob(repo, digest)
        self._db.delete(("blob", repo.prefix, repo.name, digest.hex))

    def probe(self) -> None:
        """Write and read one entry (a readiness probe): raises if the database is unusable."""
        self._db.set("probe", time.time())
        self._db.get("probe")

    # -- listing ---------------------------------------------------------------------------
    def repositories(self) -> list[Repository]:
        """Cached repositories, from a store scan remembered for a short while."""
        cached = self._db.get("repositories")
        if cached is not None and time.time() - cached[0] < _REPOSITORIES_TTL_SECONDS:
            return cached[1]
        repos = self._store.list_repositories()
        self._db.set("repositories", (time.time(), repos))
        return repos

    def forget_repositories(self) -> None:
        self._db.delete("repositories")
