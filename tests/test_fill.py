"""A fill's worker thread never outlives the fill: cancelling a fill (the proxy stopping)
stops the thread before the temp file it writes through is deleted, or, when other
instances can follow it (its size is announced), left to one of them to take over."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from mirror.cache.store import ContentStore
from mirror.proxy.fill import BlobFill
from mirror.reference import Digest

BODY = b"x" * (4 << 20)
DIGEST = Digest(hashlib.sha256(BODY).hexdigest())


async def _cancel_mid_fill(store: ContentStore, announced: bool) -> BlobFill:
    """A socket fill of BODY cancelled after its thread wrote 1000 bytes."""
    writer = store.claim_fill(DIGEST)
    assert writer is not None
    if announced:  # as `BlobFills` does once the upstream said the size
        writer.announce_size(len(BODY))
    upstream, ours = socket.socketpair()
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        fill = BlobFill(writer, executor)
        upstream.sendall(BODY[:1000])  # then nothing: the thread waits in recv()
        task = asyncio.ensure_future(fill.run_from_socket(len(BODY), b"", ours, timeout=60))
        while fill.writer.size < 1000:  # written by the thread (progress is reported later)
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The one worker is free at once: the receive did not go on in the background.
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(executor, lambda: 42), 5) == 42
        assert fill.error is not None and not fill.verified
        return fill
    finally:
        upstream.close()
        executor.shutdown(wait=False, cancel_futures=True)


async def test_cancelling_a_socket_fill_stops_its_thread_first(tmp_path):
    store = ContentStore(tmp_path / "cache")
    await _cancel_mid_fill(store, announced=False)  # nobody could follow it
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []
    assert store.blob_size(DIGEST) is None


async def test_a_cancelled_fill_others_can_follow_is_left_for_a_takeover(tmp_path):
    store = ContentStore(tmp_path / "cache")
    await _cancel_mid_fill(store, announced=True)
    assert store.partial_path(DIGEST).read_bytes() == BODY[:1000]
    assert store.partial_size(DIGEST) == len(BODY)
    assert store.blob_size(DIGEST) is None
    os.utime(store.partial_path(DIGEST), (0, 0))  # its heartbeat stopped long ago
    taken = store.take_over_fill(DIGEST, stale_seconds=10)
    assert taken is not None and taken.size == 1000  # resumes after the bytes written
    taken.abort()
