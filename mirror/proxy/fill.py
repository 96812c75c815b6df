"""One upstream download of a blob, teed into the store while clients read it as it grows.

A `BlobFill` writes one upstream body into a temp file of the store while any number of
clients stream the same temp file (each with its own file descriptor, so a slow client never
holds back the fill or another client). Hashing and writing run in a worker thread,
overlapped with receiving the next chunk. The last byte of every response is held back
until the whole blob is verified, so a digest mismatch or a truncated upstream body aborts
every response instead of completing it as if it were valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor

from mirror.cache.refusals import is_refusal
from mirror.cache.store import BlobWriter
from mirror.errors import MirrorError, StoreRefused, UpstreamBadGateway, UpstreamTimeout
from mirror.proxy.body_receiver import BodyReceiver

log = logging.getLogger(__name__)

_MAX_BATCH = 16 * 1024 * 1024
_RECEIVE_BUFFER = 1024 * 1024
_RECEIVE_BUFFERS = 8
_PROGRESS_STEP = 4 * 1024 * 1024
_PROGRESS_SECONDS = 0.05  # a slow upstream's bytes reach readers at least this often


class BlobFill:
    """One upstream download of a blob into the store, shared by every waiting client."""

    def __init__(
        self,
        writer: BlobWriter,
        executor: Executor,
        received: Callable[[int], None] = lambda count: None,
    ) -> None:
        """`received` counts the body bytes as they arrive from the upstream."""
        self.digest = writer.digest
        self.writer = writer
        self.size: int | None = None  # from the upstream's Content-Length, else once verified
        self.written = writer.size  # a fill taken over resumes after what is there
        self.verified = False
        self.error: MirrorError | None = None
        self.started = asyncio.Event()  # set once the size is known or the fill failed
        self._progress = asyncio.Event()
        self._executor = executor
        self._count_received = received
        self._stop = False  # set to end a worker-thread receive early
        self._reported = 0  # `written` when readers were last woken
        self._reported_at = time.monotonic()

    async def run(self, size: int | None, chunks: AsyncIterator[bytes]) -> None:
        """Consume the upstream body (what the temp file lacks of the blob's `size`
        bytes); set `verified` or `error`. Never raises.

        Chunks arrive as the socket delivers them and are batched while the worker thread
        hashes and writes the previous batch: no join copies, one thread hop per batch,
        and at most `_MAX_BATCH` bytes held in memory.
        """
        await self._run_body(size, self._write_chunks(size, chunks))

    async def _write_chunks(self, size: int | None, chunks: AsyncIterator[bytes]) -> None:
        loop = asyncio.get_running_loop()
        pending: asyncio.Future | None = None
        batch: list[bytes] = []
        batched = 0
        try:
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                if pending is not None and (pending.done() or batched >= _MAX_BATCH):
                    self._advance(await pending)
                    pending = None
                if pending is None:
                    pending = loop.run_in_executor(self._executor, self._write, batch)
                    batch, batched = [], 0
            if pending is not None:
                self._advance(await pending)
                pending = None
            if batch:
                self._advance(await loop.run_in_executor(self._executor, self._write, batch))
        except BaseException:
            if pending is not None:  # a write in the worker thread ends before the clean-up
                await asyncio.gather(pending, return_exceptions=True)
            raise
        if size is not None and self.written != size:
            raise UpstreamBadGateway(
                f"upstream sent {self.written} of {size} bytes of {self.digest}"
            )

    async def run_from_socket(
        self, size: int, prefix: bytes, sock: socket.socket, timeout: float
    ) -> None:
        """Like `run`, for a body detached from the event loop: one worker thread receives
        into a reused buffer, hashes and writes; the loop only hears of progress. `size`
        is the blob's; the body holds what the temp file lacks."""
        loop = asyncio.get_running_loop()
        receiving = loop.run_in_executor(
            self._executor, self._receive, loop, size - self.written, prefix, sock, timeout
        )
        try:
            await self._run_body(size, self._until_received(receiving, sock))
        finally:
            sock.close()

    async def _until_received(self, receiving: asyncio.Future, sock: socket.socket) -> None:
        """Wait for the receiving thread. Cancelled (the proxy stops), stop the thread and let
        it end first: it writes through the temp file's descriptor, which the clean-up closes
        and the next open() may reuse for another file."""
        try:
            await asyncio.shield(receiving)
        except asyncio.CancelledError:
            self._stop = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in the thread
            await asyncio.wait([receiving])
            if not receiving.cancelled():
                receiving.exception()  # the thread's "cut short": expected, not worth a traceback
            raise

    async def run_from_transport(
        self, size: int, prefix: bytes, transport: asyncio.Transport, timeout: float
    ) -> None:
        """Like `run`, for a body whose connection aiohttp handed over: the loop receives
        (over TLS: decrypts) into reused buffers that a worker thread hashes and writes."""
        receiver = BodyReceiver(
            transport,
            self.writer,
            self._executor,
            prefix,
            size - self.written - len(prefix),
            timeout,
            self._received,
        )
        await self._run_body(size, receiver.receive())

    async def _run_body(self, size: int | None, receive: Awaitable[None]) -> None:
        """Await `receive` (the rest of the body, hashed and written), then verify and
        persist; any failure, cancellation included, deletes the temp file."""
        loop = asyncio.get_running_loop()
        self.size = size
        self.started.set()
        try:
            await receive
            await self._verify_and_persist(loop)
        except BaseException as exc:
            self._stop = True
            if isinstance(exc, asyncio.CancelledError) and self._resumable():
                self._leave_for_takeover()
            else:
                await self._discard_partial(loop, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.started.set()
            self._notify()

    def _received(self, count: int) -> None:
        """Count written bytes; wake readers once per `_PROGRESS_STEP` (each wake-up costs
        every reader a sendfile set-up), or `_PROGRESS_SECONDS` for a slow upstream."""
        self.written += count
        self._count_received(count)
        now = time.monotonic()
        if (
            self.written - self._reported >= _PROGRESS_STEP
            or self.written == self.size
            or now - self._reported_at >= _PROGRESS_SECONDS
        ):
            self._reported, self._reported_at = self.written, now
            self._notify()

    def _resumable(self) -> bool:
        """Another instance can go on from what this fill wrote: its size is announced
        next to the shared partial file, which holds some bytes and is not renamed yet."""
        size_note = self.writer.size_path
        return (
            size_note is not None
            and os.path.exists(size_note)
            and self.writer.size > 0
            and not self.verified
        )

    def _leave_for_takeover(self) -> None:
        """Cancelled (the proxy stops): keep the partial file for another instance to take
        over once its heartbeat is stale, instead of deleting bytes it may be following."""
        self.error = UpstreamBadGateway(f"the mirror stopped while downloading {self.digest}")
        self.writer.release()
        log.info(
            "left the fill of %s at byte %d of %d for another instance to take over",
            self.digest,
            self.writer.size,
            self.size,
        )

    async def _discard_partial(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        """Record why a fill failed or was cancelled, then delete its temp file (a client
        that finds the file gone finds the reason); readers see it on their next wait."""
        if isinstance(exc, MirrorError):
            self.error = exc
        elif is_refusal(exc):  # readers go on from the upstream (sources.RefusalBypass)
            self.error = StoreRefused(exc)
        else:
            self.error = UpstreamBadGateway(f"download of {self.digest} from upstream failed")
        await loop.run_in_executor(self._executor, self.writer.abort)

    async def _verify_and_persist(self, loop: asyncio.AbstractEventLoop) -> None:
        """Release the held-back last bytes as soon as the digest matches; the fsync and
        rename (slow on a disk with a lot of dirty data) happen after that."""
        self.writer.verify()
        if self.size is None:  # an upstream that sent no length: now it is known
            self.size = self.written
        self.verified = True
        self._notify()
        persist = loop.run_in_executor(self._executor, self.writer.persist)
        try:
            await asyncio.shield(persist)
        except asyncio.CancelledError:
            # Shutting down: the content is valid, let the rename finish first (the
            # caller's cleanup must not race a rename in progress).
            await asyncio.wait([persist])
            raise

    def _receive(
        self,
        loop: asyncio.AbstractEventLoop,
        size: int,
        prefix: bytes,
        sock: socket.socket,
        timeout: float,
    ) -> None:
        """Worker thread: receive into reused buffers and append them to the temp file,
        while a second thread hashes them (each of the three releases the GIL)."""
        sock.settimeout(timeout)
        self.writer.write(prefix)
        received = len(prefix)
        reported, reported_at = 0, time.monotonic()
        free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(_RECEIVE_BUFFERS):
            free.put(memoryview(bytearray(_RECEIVE_BUFFER)))
        to_hash: queue.SimpleQueue = queue.SimpleQueue()
        hasher = threading.Thread(
            target=self._hash_buffers, args=(to_hash, free), name="mirror-hash", daemon=True
        )
        hasher.start()
        try:
            while received < size and not self._stop:
                buffer = free.get()
                count = self._recv(sock, buffer, size - received)
                if count == 0:
                    break
                self.writer.append([buffer[:count]])
                to_hash.put(buffer[:count])
                received += count
                if (
                    received - reported >= _PROGRESS_STEP
                    or received == size
                    or time.monotonic() - reported_at >= _PROGRESS_SECONDS
                ):
                    loop.call_soon_threadsafe(self._advance, received - reported)
                    reported, reported_at = received, time.monotonic()
        finally:
            to_hash.put(None)
            hasher.join()
        if received != size:
            raise UpstreamBadGateway(f"upstream sent {received} of {size} bytes of {self.digest}")

    def _recv(self, sock: socket.socket, buffer: memoryview, remaining: int) -> int:
        try:
            return sock.recv_into(buffer, min(len(buffer), remaining))
        except TimeoutError:
            raise UpstreamTimeout(f"upstream stalled sending {self.digest}") from None
        except OSError:
            raise UpstreamBadGateway(f"connection lost while receiving {self.digest}") from None

    def _hash_buffers(self, to_hash: queue.SimpleQueue, free: queue.SimpleQueue) -> None:
        while (view := to_hash.get()) is not None:
            self.writer.hash(view)
            free.put(view.obj if isinstance(view.obj, memoryview) else memoryview(view.obj))

    def fail_before_start(self, error: MirrorError) -> None:
        """End a fill that never started (the upstream refused the request): delete its
        empty temp file and wake its readers with `error`."""
        self.writer.abort()
        self.error = error
        self.started.set()
        self._notify()

    def _write(self, batch: list[bytes]) -> int:
        self.writer.write_many(batch)
        return sum(map(len, batch))

    def _advance(self, count: int) -> None:
        self.written += count
        self._count_received(count)
        self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def sendable(self, position: int, end: int) -> int:
        """Bytes arrive as they are written; only a response that ends with the blob's
        last byte waits for the digest to verify (a range before it is sent unverified)."""
        while True:
            if self.error is not None:
                raise self.error
            held_back = 1 if self.size is None or end >= self.size else 0
            bound = end if self.verified else min(self.written, end - held_back)
            if bound > position:
                return bound
            await self._progress.wait()
