"""Receiving the rest of an upstream body on a connection aiohttp handed over.

The event loop receives (over TLS: decrypts) straight into a few reused buffers, and a
worker thread hashes and appends each full buffer to the blob's temp file, in order, while
the loop fills the next: no bytes object per chunk, no copy after decryption, and at most
four buffers held per fill.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

from mirror.cache.store import BlobWriter
from mirror.errors import UpstreamBadGateway, UpstreamTimeout

_BUFFER = 1024 * 1024
_BUFFERS = 4  # one being received into, the rest queued for or in the worker thread


class BodyReceiver(asyncio.BufferedProtocol):
    """Receives `remaining` body bytes from `transport` into `writer`, reporting each
    buffer written to `written`; stands in for the connection's protocol meanwhile."""

    def __init__(
        self,
        transport: asyncio.Transport,
        writer: BlobWriter,
        executor: Executor,
        prefix: bytes,
        remaining: int,
        timeout: float,
        written: Callable[[int], None],
    ) -> None:
        """`prefix`: body bytes aiohttp had already read, written first; `remaining`: how
        many follow on the connection."""
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._writer = writer
        self._executor = executor
        self._remaining = remaining
        self._timeout = timeout
        self._written = written
        self._free = [memoryview(bytearray(_BUFFER)) for _ in range(_BUFFERS - 1)]
        self._buffer: memoryview | None = memoryview(bytearray(_BUFFER))
        self._filled = 0
        self._queued: deque[memoryview] = deque([memoryview(prefix)] if prefix else [])
        self._writing: asyncio.Future | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._last_data = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    async def receive(self) -> None:
        """Receive, hash and write the rest of the body; raises what went wrong. The
        connection's own protocol is back in place afterwards, with reading paused."""
        previous = self._transport.get_protocol()
        self._transport.set_protocol(self)
        try:
            if self._remaining > 0:
                self._resume()
            self._write_next()
            await self._done
        finally:
            self._pause()
            self._transport.set_protocol(previous)
            if self._writing is not None:
                # A write in a worker thread cannot be cancelled: let it end before the
                # caller deletes or renames the file.
                await asyncio.wait([self._writing])

    # -- asyncio.BufferedProtocol ---------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        assert self._buffer is not None, "reading is paused while no buffer is free"
        return self._buffer[self._filled : self._filled + self._remaining]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        self._remaining -= nbytes
        self._last_data = self._loop.time()
        assert self._buffer is not None
        if self._remaining == 0 or self._filled == len(self._buffer):
            self._queued.append(self._buffer[: self._filled])
            self._buffer, self._filled = (self._free.pop() if self._free else None), 0
            if self._buffer is None or self._remaining == 0:
                self._pause()
            self._write_next()

    def eof_received(self) -> bool:
        self._cut_short()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cut_short()

    # -- the worker thread's side ----------------------------------------------------------
    def _write_next(self) -> None:
        if self._writing is not None or self._done.done():
            return
        if self._queued:
            view = self._queued.popleft()
            self._writing = self._loop.run_in_executor(self._executor, self._writer.write, view)
            self._writing.add_done_callback(lambda done: self._after_write(done, view))
        elif self._remaining == 0:
            self._done.set_result(None)

    def _after_write(self, done: asyncio.Future, view: memoryview) -> None:
        self._writing = None
        if done.cancelled():
            self._fail(UpstreamBadGateway("the write of a received buffer was cancelled"))
            return
        if (error := done.exception()) is not None:
            self._fail(error)
            return
        self._written(len(view))
        if isinstance(view.obj, bytearray):  # one of ours, not the prefix
            self._free.append(memoryview(view.obj))
        if self._buffer is None and self._remaining > 0 and not self._done.done():
            self._buffer = self._free.pop()
            self._resume()
        self._write_next()

    # -- flow control and the read timeout -------------------------------------------------
    def _pause(self) -> None:
        self._transport.pause_reading()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _resume(self) -> None:
        self._last_data = self._loop.time()
        self._timer = self._loop.call_at(self._last_data + self._timeout, self._check_timeout)
        self._transport.resume_reading()

    def _check_timeout(self) -> None:
        deadline = self._last_data + self._timeout
        if self._loop.time() >= deadline:
            self._timer = None
            self._fail(UpstreamTimeout("upstream stalled sending the body"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_timeout)

    def _cut_short(self) -> None:
        if self._remaining > 0:
            self._fail(
                UpstreamBadGateway(f"upstream closed the body {self._remaining} bytes early")
            )

    def _fail(self, error: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(error)
