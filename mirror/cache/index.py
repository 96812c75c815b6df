"""The metadata index: a node-local diskcache in front of the store's repository metadata.

It answers the hot questions (what does this tag point at, may this repository serve this
digest, what media type does this manifest have) without filesystem metadata operations,
which are slow on Lustre and GPFS. It is only ever a cache: positive answers are copied from
the store, misses fall through to the store (so links written by another instance are seen),
and deleting the index directory loses nothing but pull statistics. SQLite's WAL does not
work on network filesystems, which is why the index lives on node-local disk.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import diskcache

from mirror.cache.store import ContentStore, TagRecord
from mirror.manifests import ParsedManifest
from mirror.reference import Digest, Repository

_CATALOG_TTL_SECONDS = 30.0


class MetadataIndex:
    def __init__(self, directory: Path, store: ContentStore) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # eviction off: entries are small, and pull statistics must not vanish silently.
        self._cache = diskcache.Cache(str(directory), eviction_policy="none")
        self._store = store
        self._pulls: Counter[tuple[str, str, str]] = Counter()
        self._last_pulled: dict[tuple[str, str, str], float] = {}
        self._pulls_lock = threading.Lock()
        index_key = hashlib.sha256(str(directory).encode()).hexdigest()[:8]
        self._node = f"{socket.gethostname()}-{index_key}"  # one stats file per node
        self._others: tuple[float, dict] | None = None
        self._unexported = False  # counts flushed to the index but not yet published

    def close(self) -> None:
        self.flush_pulls()
        self.export_pulls()
        self._cache.close()

    # -- tags ------------------------------------------------------------------------------
    def tag(self, repo: Repository, tag: str, *, from_store: bool = False) -> TagRecord | None:
        """The tag record; `from_store` skips the index to see another instance's update."""
        key = ("tag", repo.prefix, repo.name, tag)
        if not from_store:
            record = self._cache.get(key)
            if record is not None:
                return record
        record = self._store.read_tag(repo, tag)
        if record is not None:
            self._cache.set(key, record)
        return record

    def put_tag(self, repo: Repository, tag: str, record: TagRecord) -> None:
        self._store.write_tag(repo, tag, record)
        self._cache.set(("tag", repo.prefix, repo.name, tag), record)

    def tags(self, repo: Repository) -> list[str]:
        return self._store.list_tags(repo)

    # -- manifests and blobs a repository may serve ----------------------------------------
    def manifest_media_type(self, repo: Repository, digest: Digest) -> str | None:
        key = ("manifest", repo.prefix, repo.name, digest.hex)
        media_type = self._cache.get(key)
        if media_type is None:
            media_type = self._store.manifest_media_type(repo, digest)
            if media_type is not None:
                self._cache.set(key, media_type)
        return media_type

    def link_manifest(self, repo: Repository, digest: Digest, media_type: str,
                      parsed: ParsedManifest) -> None:
        """Record that `repo` has this manifest, and what it lets `repo` serve: its blobs,
        and for an index its child manifests (with the type the index gives them)."""
        for child in parsed.manifests:
            if self.manifest_media_type(repo, child.digest) is None and child.media_type:
                self._store.link_manifest(repo, child.digest, child.media_type)
        for blob_digest in parsed.blob_digests:
            self.link_blob(repo, blob_digest)
        self._store.link_manifest(repo, digest, media_type)
        self._cache.set(("manifest", repo.prefix, repo.name, digest.hex), media_type)

    def may_serve_blob(self, repo: Repository, digest: Digest) -> bool:
        key = ("blob", repo.prefix, repo.name, digest.hex)
        if key in self._cache:
            return True
        if self._store.blob_linked(repo, digest):
            self._cache.set(key, True)
            return True
        return False

    def link_blob(self, repo: Repository, digest: Digest) -> None:
        key = ("blob", repo.prefix, repo.name, digest.hex)
        if key not in self._cache:
            self._store.link_blob(repo, digest)
            self._cache.set(key, True)

    # -- listing ---------------------------------------------------------------------------
    def repositories(self) -> list[Repository]:
        """Cached repositories, from a store scan remembered for a short while."""
        cached = self._cache.get("repositories")
        if cached is not None and time.time() - cached[0] < _CATALOG_TTL_SECONDS:
            return cached[1]
        repos = self._store.list_repositories()
        self._cache.set("repositories", (time.time(), repos))
        return repos

    def forget_repositories(self) -> None:
        self._cache.delete("repositories")

    # -- pull statistics -------------------------------------------------------------------
    def record_pull(self, repo: Repository, reference: str) -> None:
        """Count a manifest pull in memory; `flush_pulls` persists the counts in batches so
        the hot path never waits on an SQLite write."""
        key = (repo.prefix, repo.name, reference)
        with self._pulls_lock:
            self._pulls[key] += 1
            self._last_pulled[key] = time.time()

    def flush_pulls(self) -> bool:
        """Write the counts gathered in memory to the index; True if there were any."""
        with self._pulls_lock:
            pulls, self._pulls = self._pulls, Counter()
            last, self._last_pulled = self._last_pulled, {}
        if not pulls:
            return False
        by_repo: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}
        for (prefix, name, reference), count in pulls.items():
            by_repo.setdefault((prefix, name), {})[reference] = (count,
                                                                 last[prefix, name, reference])
        with self._cache.transact():
            for (prefix, name), counts in by_repo.items():
                key = ("pulls", prefix, name)
                stats = dict(self._cache.get(key, {}))
                for reference, (count, when) in counts.items():
                    stats[reference] = (stats.get(reference, (0, 0.0))[0] + count, when)
                self._cache.set(key, stats)
        self._unexported = True
        return True

    def export_pulls(self) -> None:
        """Publish this node's pull counts on the shared store, if they changed since the
        last time: one file per node (named by host and index), so `gc` and the catalog
        on any node see every node's pulls and no two nodes ever write the same file."""
        if not self._unexported:
            return
        self._unexported = False
        totals = {}
        for key in self._cache.iterkeys():
            if isinstance(key, tuple) and key[0] == "pulls":
                totals[f"{key[1]}/{key[2]}"] = self._cache.get(key, {})
        self._store.write_pull_stats(self._node, totals)

    def pull_stats(self, repo: Repository) -> dict[str, tuple[int, float]]:
        """Per tag or digest of `repo`, over every node: (pull count, last pulled time)."""
        merged = dict(self._cache.get(("pulls", repo.prefix, repo.name), {}))
        for reference, (count, when) in self._other_nodes().get(str(repo), {}).items():
            old_count, old_when = merged.get(reference, (0, 0.0))
            merged[reference] = (old_count + count, max(old_when, when))
        return merged

    def _other_nodes(self) -> dict[str, dict[str, tuple[int, float]]]:
        """Pull counts published by the other nodes, summed, read once a while."""
        now = time.time()
        if self._others is None or now - self._others[0] > _CATALOG_TTL_SECONDS:
            summed: dict[str, dict[str, tuple[int, float]]] = {}
            for node, totals in self._store.read_pull_stats().items():
                if node == self._node:
                    continue  # this node's own counts come from its index, fresher
                for repo, refs in totals.items():
                    into = summed.setdefault(repo, {})
                    for reference, (count, when) in refs.items():
                        old_count, old_when = into.get(reference, (0, 0.0))
                        into[reference] = (old_count + count, max(old_when, when))
            self._others = (now, summed)
        return self._others[1]
