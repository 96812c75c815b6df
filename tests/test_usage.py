"""The store's size for /metrics: kept per shard as blobs land, rescanned a bounded piece at
a time, published only when it changes."""

from __future__ import annotations

import hashlib

from mirror.cache.store import ContentStore
from mirror.cache.usage import StoreUsage
from mirror.metrics import series
from mirror.reference import Digest

SHARDS = len(ContentStore.BLOB_SHARDS)


def _put(store: ContentStore, content: bytes) -> Digest:
    digest = Digest(hashlib.sha256(content).hexdigest())
    assert store.put_bytes(digest, content)
    return digest


def _gauges() -> tuple[float | None, float | None]:
    return (
        series.REGISTRY.get_sample_value("hpc_mirror_cache_size_bytes"),
        series.REGISTRY.get_sample_value("hpc_mirror_cache_blobs"),
    )


def test_totals_come_once_every_shard_was_read_then_follow_what_lands(tmp_path):
    store = ContentStore(tmp_path)
    contents = [b"a" * 10, b"b" * 20, b"c" * 30]
    for content in contents:
        _put(store, content)
    usage = StoreUsage(store)
    for _ in range(SHARDS - 1):
        usage.rescan(0)  # one shard per call
        assert usage.totals() is None
    usage.rescan(0)
    assert usage.totals() == (60, 3)
    assert _gauges() == (60, 3)

    usage.added(_put(store, b"d" * 40), 40)
    assert usage.totals() == (100, 4)
    assert _gauges() == (100, 4)


def test_a_bounded_rescan_reads_part_of_the_store_and_a_round_corrects_it(tmp_path, monkeypatch):
    store = ContentStore(tmp_path)
    digests = [_put(store, f"blob {n}".encode() * (n + 1)) for n in range(60)]
    usage = StoreUsage(store)
    usage.rescan(1 << 62)  # the whole store
    assert usage.totals() == (sum(store.blob_size(d) or 0 for d in digests), 60)

    for digest in digests[:20]:  # what `mirror gc` in another process does
        store.delete_blob(digest)
    read: list[str] = []
    shard_blobs = store.shard_blobs
    monkeypatch.setattr(
        store, "shard_blobs", lambda shard: read.append(shard) or shard_blobs(shard)
    )
    usage.rescan(5)
    assert 0 < len(read) < SHARDS  # stopped once 5 blobs were counted
    while len(read) < SHARDS:
        usage.rescan(5)
    assert usage.totals() == (sum(store.blob_size(d) or 0 for d in digests[20:]), 40)


def test_a_rescan_that_changes_nothing_leaves_the_gauges_alone(tmp_path):
    """With several workers the gauge holds whichever set it last: a worker whose figures
    did not move must not put back its older view over another's newer one."""
    store = ContentStore(tmp_path)
    _put(store, b"x" * 5)
    usage = StoreUsage(store)
    usage.rescan(1 << 62)
    assert _gauges() == (5, 1)
    series.CACHE_BYTES.set(123)  # another worker saw a blob land
    series.CACHE_BLOBS.set(2)
    usage.rescan(1 << 62)
    assert _gauges() == (123, 2)
