"""A blob the store cannot take (full, over quota, failing), streamed to one client from an
upstream GET of its own and never written anywhere.

Every byte is hashed as it passes and the last byte of the response is held back until the
whole blob verifies, as for a fill. Memory stays bounded however slow the client: at most
`_WINDOW` bytes (plus one received chunk) wait here for it, and while they wait the socket
is not read, so TCP holds the upstream back. (A body that cannot be detached from aiohttp,
TLS or chunked, also fills aiohttp's bounded read buffer first.) Each client has its own
GET, so a slow one slows no one else.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager, aclosing
from typing import IO, Any

from aiohttp import ClientResponse

from mirror.errors import DigestMismatch, MirrorError, UpstreamBadGateway, UpstreamTimeout
from mirror.metrics import series
from mirror.proxy.upstream import detach_body
from mirror.reference import Digest

_WINDOW = 1024 * 1024  # bytes read ahead of the client, at most
_RECEIVE = 256 * 1024

# Opens the upstream GET for a client holding the first `start` bytes: (response, the
# blob's size, bytes at the start of the body to read past); `RegistryClient.blob_from`.
OpenBody = Callable[[int], AbstractAsyncContextManager[tuple[ClientResponse, int | None, int]]]


class PassThroughBlob:
    """One client's stream of a blob straight from the upstream; a `BlobSource` with no file."""

    file: IO[bytes] | None = None
    cache_result = series.PASS_THROUGH

    def __init__(
        self,
        digest: Digest,
        open_body: OpenBody,
        executor: Executor,
        read_timeout: float,
        received: Callable[[int], None] = lambda count: None,
    ) -> None:
        """`received` counts the body bytes as they arrive from the upstream."""
        self.digest = digest
        self._count_received = received
        self.size: int | None = None  # from Content-Length, else once verified
        self.verified = False
        self.error: MirrorError | None = None
        self._open_body = open_body
        self._executor = executor
        self._read_timeout = read_timeout
        self._hash: Any = hashlib.sha256()
        self._skip = 0  # leading bytes the client has already (vouched for by the prefix hash)
        self._received = 0  # upstream body bytes read so far
        self._buffer = bytearray()  # body bytes [_buffer_start, _buffer_start + len) kept
        self._buffer_start = 0
        self._position = 0  # the client's, and the span it asks for
        self._end = 1 << 62
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def begin(self, position: int = 0, prefix_hash: Any = None) -> None:
        """Send the GET; return once its headers arrived (`size` is then known, if the
        upstream sent it). The client wants the bytes from `position` on; `prefix_hash`, if
        given, is the sha256 of those before it as the client got them from elsewhere
        (they are then read past, not hashed again)."""
        if prefix_hash is not None:
            self._hash, self._skip = prefix_hash, position
        self._position = self._buffer_start = position
        headers: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._stream(headers))
        try:
            await headers
        except BaseException:
            self.close()
            raise

    async def _stream(self, headers: asyncio.Future[None]) -> None:
        try:
            async with self._open_body(self._skip) as (response, size, read_past):
                self.size = size
                # Where the body starts in the blob: after the bytes the client has, if the
                # upstream honoured the Range; else at 0, with those bytes read past.
                self._received = self._skip - read_past
                headers.set_result(None)
                async with aclosing(self._body(response)) as body:
                    async for chunk in body:
                        await self._take(chunk)
            if self.size is not None and self._received != self.size:
                raise UpstreamBadGateway(
                    f"upstream sent {self._received} of {self.size} bytes of {self.digest}"
                )
            actual = self._hash.hexdigest()
            if actual != self.digest.hex:
                raise DigestMismatch(f"upstream content for {self.digest} hashed to {actual}")
            self.size = self._received
            self.verified = True
        except Exception as exc:  # the client's next wait raises it
            if isinstance(exc, MirrorError):
                self.error = exc
            elif isinstance(exc, TimeoutError):
                self.error = UpstreamTimeout(f"upstream stalled sending {self.digest}")
            else:
                self.error = UpstreamBadGateway(f"download of {self.digest} from upstream failed")
            if not headers.done():
                headers.set_exception(self.error)
        finally:
            self._notify()

    async def _body(self, response: ClientResponse) -> AsyncGenerator[bytes, None]:
        """The body in chunks, read only when asked: off aiohttp's buffer where possible."""
        detached = detach_body(response, plain_only=True)
        if detached is None or detached.sock is None:
            while chunk := (await response.content.readchunk())[0]:
                yield chunk
            return
        loop, sock = asyncio.get_running_loop(), detached.sock
        try:
            sock.setblocking(False)
            if detached.prefix:
                yield detached.prefix
            remaining = detached.length - len(detached.prefix)
            while remaining > 0:
                async with asyncio.timeout(self._read_timeout):
                    chunk = await loop.sock_recv(sock, min(_RECEIVE, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk
        finally:
            sock.close()
            response.close()

    async def _take(self, chunk: bytes) -> None:
        """Hash one body chunk and keep the part the client still needs, once it has room."""
        offset = self._received
        self._received += len(chunk)
        self._count_received(len(chunk))
        if self._received <= self._skip:
            return
        view = memoryview(chunk)[max(self._skip - offset, 0) :]
        offset = max(offset, self._skip)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._hash.update, view)
        while len(self._buffer) >= _WINDOW:
            await self._wait()
        low, high = max(offset, self._position), min(offset + len(view), self._end)
        if high > low:
            if not self._buffer:
                self._buffer_start = low
            self._buffer += view[low - offset : high - offset]
            self._notify()

    async def sendable(self, position: int, end: int) -> int:
        self._position, self._end = position, end
        dropped = min(position - self._buffer_start, len(self._buffer))
        if dropped > 0:
            del self._buffer[:dropped]
            self._buffer_start += dropped
            self._notify()  # room for the upstream reader
        while True:
            if self.error is not None:
                raise self.error
            top = self._buffer_start + len(self._buffer) if self._buffer else position
            bound = end if self.verified else min(top, end - 1)
            if bound > position:
                return bound
            await self._wait()

    def read(self, position: int, count: int) -> bytes:
        """Bytes the last `sendable` made available (fewer past the end of the blob)."""
        start = position - self._buffer_start
        with memoryview(self._buffer) as view:
            return bytes(view[start : start + count])

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._buffer = bytearray()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self) -> None:
        await self._changed.wait()
