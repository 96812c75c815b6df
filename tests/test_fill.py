"""A fill's worker thread never outlives the fill: cancelling a fill (the proxy stopping)
stops the thread before the temp file it writes through is deleted."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from concurrent.futures import ThreadPoolExecutor

from mirror.cache.store import ContentStore
from mirror.proxy.fill import BlobFill
from mirror.reference import Digest


async def test_cancelling_a_socket_fill_stops_its_thread_first(tmp_path):
    store = ContentStore(tmp_path / "cache")
    body = b"x" * (4 << 20)
    digest = Digest(hashlib.sha256(body).hexdigest())
    writer = store.claim_fill(digest)
    assert writer is not None
    upstream, ours = socket.socketpair()
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        fill = BlobFill(writer, executor)
        upstream.sendall(body[:1000])  # then nothing: the thread waits in recv()
        task = asyncio.ensure_future(fill.run_from_socket(len(body), b"", ours, timeout=60))
        while fill.writer.size < 1000:  # written by the thread (progress is reported later)
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The one worker is free at once: the receive did not go on in the background.
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(executor, lambda: 42), 5) == 42
        assert fill.error is not None and not fill.verified
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []
        assert store.blob_size(digest) is None
    finally:
        upstream.close()
        executor.shutdown(wait=False, cancel_futures=True)
