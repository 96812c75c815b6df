"""How much the store holds, without walking it whenever someone asks.

Bytes and blob count are kept per shard of the store (`ContentStore.BLOB_SHARDS`). The blobs
this process commits are added as they land; a rescan, one bounded piece at a time, replaces
each shard's figures with what is on disk, so what other instances commit and what
`mirror gc` or `mirror verify` remove shows up within one round of rescans. The totals are
published as the `cache_size_bytes` and `cache_blobs` series whenever they change.
"""

from __future__ import annotations

import threading

from mirror.cache.store import ContentStore
from mirror.metrics import series
from mirror.reference import Digest


class StoreUsage:
    """Per-shard bytes and blob counts of one store; the totals once every shard was read."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._shards: dict[str, tuple[int, int]] = {}  # shard -> (bytes, blobs)
        self._next = 0  # index into BLOB_SHARDS where the next rescan starts
        self._lock = threading.Lock()  # rescans run in a worker thread
        self._published: tuple[int, int] | None = None

    def totals(self) -> tuple[int, int] | None:
        """(bytes, blobs) in the store; None until every shard has been read once."""
        with self._lock:
            return self._totals()

    def _totals(self) -> tuple[int, int] | None:
        if len(self._shards) < len(ContentStore.BLOB_SHARDS):
            return None
        return (
            sum(size for size, _ in self._shards.values()),
            sum(count for _, count in self._shards.values()),
        )

    def added(self, digest: Digest, size: int) -> None:
        """This process put a new blob (or manifest) under its final path."""
        shard = ContentStore.blob_shard(digest)
        with self._lock:
            if shard in self._shards:  # else the shard's first read will find it
                size_before, count_before = self._shards[shard]
                self._shards[shard] = (size_before + size, count_before + 1)
        self._publish()

    def rescan(self, budget: int) -> None:
        """Read shards from where the last rescan stopped until at least `budget` blobs
        were counted or every shard was read (blocking: run it in a worker thread). A blob
        committed while its shard is read may be missed until the next round."""
        counted = 0
        for _ in ContentStore.BLOB_SHARDS:
            shard = ContentStore.BLOB_SHARDS[self._next]
            self._next = (self._next + 1) % len(ContentStore.BLOB_SHARDS)
            blobs = self._store.shard_blobs(shard)
            with self._lock:
                self._shards[shard] = (sum(blob.size for blob in blobs), len(blobs))
            counted += len(blobs)
            if counted >= budget:
                break
        self._publish()

    def _publish(self) -> None:
        """Set the gauges when the totals changed: with several workers the value last set
        wins, so a worker whose figures did not move must not set its older view."""
        with self._lock:
            totals = self._totals()
            if totals is None or totals == self._published:
                return
            self._published = totals
            series.CACHE_BYTES.set(totals[0])
            series.CACHE_BLOBS.set(totals[1])
