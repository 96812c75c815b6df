"""Pull statistics: how often and how recently each tag or digest was pulled, cluster-wide.

Each node counts its pulls in memory, flushes them in batches to its node-local database
(the one the metadata cache uses, so deleting it loses this node's counts) and publishes
its totals on the shared store, one file per node. Readers sum every node's file: `gc`
evicts the least recently pulled images, the catalog shows the counts.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import diskcache

from mirror.cache.store import ContentStore
from mirror.reference import Repository

_OTHER_NODES_TTL_SECONDS = 30.0  # how long the other nodes' published counts are reused


class PullCount(NamedTuple):
    """How many times one tag or digest was pulled, and when last (Unix seconds)."""

    times: int
    last_pulled: float


NEVER_PULLED = PullCount(0, 0.0)


def node_name(index_dir: Path) -> str:
    """The name a node publishes its counts under: host and node-local database, so two
    instances on one host with their own databases never write the same file."""
    return f"{socket.gethostname()}-{hashlib.sha256(str(index_dir).encode()).hexdigest()[:8]}"


class PullStats:
    """This node's pull counts (kept in `db`), published on `store` for the other nodes."""

    def __init__(self, db: diskcache.Cache, store: ContentStore, node: str) -> None:
        self._db = db
        self._store = store
        self._node = node
        self._pulls: Counter[tuple[str, str, str]] = Counter()
        self._last_pulled: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self._others: tuple[float, dict[str, dict[str, PullCount]]] | None = None
        self._unpublished = False  # counts flushed to the database but not yet published

    def close(self) -> None:
        """Flush and publish what is left; the database stays open (its owner closes it)."""
        self.flush()
        self.publish()

    def record(self, repo: Repository, reference: str) -> None:
        """Count a manifest pull in memory; `flush` persists the counts in batches so the
        hot path never waits on an SQLite write."""
        key = (repo.prefix, repo.name, reference)
        with self._lock:
            self._pulls[key] += 1
            self._last_pulled[key] = time.time()

    def flush(self) -> bool:
        """Write the counts gathered in memory to the database; True if there were any."""
        with self._lock:
            pulls, self._pulls = self._pulls, Counter()
            last, self._last_pulled = self._last_pulled, {}
        if not pulls:
            return False
        by_repo: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}
        for (prefix, name, reference), count in pulls.items():
            by_repo.setdefault((prefix, name), {})[reference] = (
                count,
                last[prefix, name, reference],
            )
        with self._db.transact():
            for (prefix, name), counts in by_repo.items():
                key = ("pulls", prefix, name)
                stats = dict(self._db.get(key, {}))
                for reference, (count, when) in counts.items():
                    stats[reference] = (stats.get(reference, (0, 0.0))[0] + count, when)
                self._db.set(key, stats)
        self._unpublished = True
        return True

    def publish(self) -> None:
        """Publish this node's totals on the shared store, if they changed since the last
        time, so `gc` and the catalog on any node see every node's pulls."""
        if not self._unpublished:
            return
        self._unpublished = False
        totals = {}
        for key in self._db.iterkeys():
            if isinstance(key, tuple) and key[0] == "pulls":
                totals[f"{key[1]}/{key[2]}"] = self._db.get(key, {})
        self._store.write_pull_stats(self._node, totals)

    def counts(self, repo: Repository) -> dict[str, PullCount]:
        """Per tag or digest of `repo`, summed over every node."""
        merged = {
            reference: PullCount(*value)
            for reference, value in self._db.get(("pulls", repo.prefix, repo.name), {}).items()
        }
        for reference, theirs in self._other_nodes().get(str(repo), {}).items():
            merged[reference] = _add(merged.get(reference, NEVER_PULLED), theirs)
        return merged

    def _other_nodes(self) -> dict[str, dict[str, PullCount]]:
        """Pull counts published by the other nodes, summed, read once a while."""
        now = time.time()
        if self._others is None or now - self._others[0] > _OTHER_NODES_TTL_SECONDS:
            summed: dict[str, dict[str, PullCount]] = {}
            for node, totals in self._store.read_pull_stats().items():
                if node == self._node:
                    continue  # this node's own counts come from its database, fresher
                for repo, refs in totals.items():
                    into = summed.setdefault(repo, {})
                    for reference, value in refs.items():
                        into[reference] = _add(into.get(reference, NEVER_PULLED), PullCount(*value))
            self._others = (now, summed)
        return self._others[1]


def _add(ours: PullCount, theirs: PullCount) -> PullCount:
    return PullCount(ours.times + theirs.times, max(ours.last_pulled, theirs.last_pulled))
