"""Pushes below HTTP: bytes reach the disk while the body is still arriving, a session
continues through another instance's `BlobUploads`, the quota counts each blob of a
namespace once, a blob pushed again is linked again, and what a push stores counts in the
store's size at once."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from mirror.cache.metadata import MetadataCache
from mirror.cache.open_cache import open_node_db
from mirror.cache.store import ContentStore
from mirror.cache.usage import StoreUsage
from mirror.config import LocalConfig
from mirror.errors import QuotaExceeded
from mirror.local.images import LocalImages
from mirror.local.quota import NamespaceQuota
from mirror.local.uploads import BlobUploads
from mirror.reference import OCI_MANIFEST, Digest, Repository
from tests.support.local_images import backdate
from tests.support.local_push import place_blob

MIB = 1024 * 1024
TOOL = Repository("local", "alice/tool")


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def uploads_of(tmp_path, store: ContentStore, executor, node: str, **local) -> BlobUploads:
    metadata = MetadataCache(open_node_db(tmp_path / f"index-{node}"), store)
    return BlobUploads(store, metadata, LocalConfig(prefix="local", **local), executor)


def digest_of(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def test_bytes_reach_the_disk_while_the_body_arrives(tmp_path, executor):
    """The upload streams: a body is never held whole in memory."""
    store = ContentStore(tmp_path / "cache")
    uploads = uploads_of(tmp_path, store, executor, "a")
    record = await uploads.start(TOOL, "alice")
    data_path = store.upload_data_path(record.upload_id)
    sizes_seen = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):
            sizes_seen.append(os.stat(data_path).st_size)
            yield b"x" * MIB

    received = []
    assert await uploads.append(record, body(), received.append) == 8 * MIB
    assert sum(received) == 8 * MIB
    assert sizes_seen[-1] >= 5 * MIB  # at most two buffers were in memory
    assert await uploads.finish(record, digest_of(b"x" * 8 * MIB))


async def test_a_session_continues_through_another_instance(tmp_path, executor):
    store = ContentStore(tmp_path / "cache")
    first = uploads_of(tmp_path, store, executor, "a")
    second = uploads_of(tmp_path, store, executor, "b")
    data = os.urandom(3 * MIB + 3)
    record = await first.start(TOOL, "alice")
    await first.append(record, chunks_of(data[:MIB], 4096), lambda n: None)
    await second.append(record, chunks_of(data[MIB : 2 * MIB], 65536), lambda n: None)
    # `first` keeps a running hash of the first MiB only: it must read the file again.
    await first.append(record, chunks_of(data[2 * MIB :], MIB), lambda n: None, 2 * MIB)
    assert await first.finish(record, digest_of(data))
    assert store.read_blob(digest_of(data)) == data
    assert store.read_upload(record.upload_id) is None


async def test_the_quota_counts_each_blob_of_a_namespace_once(tmp_path, executor):
    store = ContentStore(tmp_path / "cache")
    shared, own, foreign = b"s" * 1000, b"o" * 500, b"f" * 700
    for data in (shared, own, foreign):
        store.put_bytes(digest_of(data), data)
    for repo, data in [
        (TOOL, shared),
        (Repository("local", "alice/deep/app"), shared),
        (Repository("local", "alice/deep/app"), own),
        (Repository("local", "bob/tool"), foreign),
        (Repository("up.test", "alice/tool"), foreign),  # an upstream's repository
    ]:
        store.link_blob(repo, digest_of(data))
    store.link_manifest(TOOL, digest_of(own), "application/vnd.oci.image.manifest.v1+json")
    quota = NamespaceQuota(store, 2000, executor)
    use = await quota.use(TOOL)
    assert (use.namespace, use.size) == ("local/alice", 1500)
    await quota.check(TOOL, 500)
    await quota.check(TOOL, 10_000, digest_of(shared))  # held already: adds nothing
    with pytest.raises(QuotaExceeded, match=r"local/alice .*1\.5 KiB of 2\.0 KiB"):
        await quota.check(TOOL, 501)
    await NamespaceQuota(store, None, executor).check(TOOL, 10**12)


async def test_a_blob_pushed_again_is_linked_again_with_a_fresh_time(tmp_path, executor):
    """A push of a blob the store holds renews its link: written through to the store when
    gc on another node took it back (this node's index still remembers it), and touched
    when it is old, so gc gives the manifest still to come its grace period again."""
    store = ContentStore(tmp_path / "cache")
    uploads = uploads_of(tmp_path, store, executor, "a")
    data = b"layer bytes"
    digest = digest_of(data)

    async def push() -> None:
        record = await uploads.start(TOOL, "alice")
        await uploads.append(record, chunks_of(data, 4), lambda n: None)
        await uploads.finish(record, digest)

    await push()
    store.unlink_blob(TOOL, digest)  # gc, on another node
    await push()
    assert store.blob_linked(TOOL, digest)
    backdate(store, 1_000_000)
    await push()
    assert (store.blob_linked_at(TOOL, digest) or 0) > 1_000_000


async def test_a_pushed_blob_counts_in_the_store_size_at_once(tmp_path, executor):
    """/metrics' store size follows pushes as they land, as it follows fills, without
    waiting for a rescan; a blob the store held already adds nothing."""
    store = ContentStore(tmp_path / "cache")
    usage = StoreUsage(store)
    while usage.totals() is None:  # the first whole read, a shard at a time: empty
        usage.rescan(0)
    metadata = MetadataCache(open_node_db(tmp_path / "index"), store)
    uploads = BlobUploads(store, metadata, LocalConfig(prefix="local"), executor, usage=usage)
    data = os.urandom(4096)
    for _ in range(2):
        record = await uploads.start(TOOL, "alice")
        await uploads.append(record, chunks_of(data, 1000), lambda n: None)
        await uploads.finish(record, digest_of(data))
        assert usage.totals() == (4096, 1)


async def test_a_pushed_manifest_counts_in_the_store_size_at_once(tmp_path, executor):
    store = ContentStore(tmp_path / "cache")
    usage = StoreUsage(store)
    while usage.totals() is None:
        usage.rescan(0)
    metadata = MetadataCache(open_node_db(tmp_path / "index"), store)
    images = LocalImages(store, metadata, store.read_blob, executor, time.time, usage)
    config = b"{}"
    digest = place_blob(tmp_path / "cache", "alice/tool", config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest,
                "size": 2,
            },
            "layers": [],
        }
    ).encode()
    assert usage.totals() == (0, 0)  # placed without telling `usage`
    await images.put_manifest(TOOL, "1.0", manifest, OCI_MANIFEST, "alice")
    assert usage.totals() == (len(manifest), 1)
