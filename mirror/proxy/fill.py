"""Sources of blob bytes for a response: a cached file, or a fill that is still arriving.

A `BlobFill` tees one upstream body into a temp file of the store while any number of
clients stream the same temp file as it grows (each with its own file descriptor, so a slow
client never holds back the fill or another client). Hashing and writing run in a worker
thread, overlapped with receiving the next chunk. The last byte of every response is held
back until the whole blob is verified, so a digest mismatch or a truncated upstream body
aborts every response instead of completing it as if it were valid.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import IO, Protocol

from mirror.cache.store import BlobWriter
from mirror.errors import MirrorError, UpstreamBadGateway, UpstreamTimeout
from mirror.reference import Digest

_MAX_BATCH = 16 * 1024 * 1024
_RECEIVE_BUFFER = 1024 * 1024
_RECEIVE_BUFFERS = 8
_PROGRESS_STEP = 4 * 1024 * 1024
_FOLLOW_POLL = 0.05


class BlobSource(Protocol):
    """What the HTTP layer needs to send blob bytes, wherever they come from."""

    digest: Digest
    size: int | None
    file: IO[bytes]

    async def sendable(self, position: int, end: int) -> int:
        """Wait until bytes after `position` may be sent; return the exclusive bound (<= end).
        `end` itself is only returned once the content is verified. Raises if the fill failed."""
        ...

    def close(self) -> None: ...


class CachedBlob:
    """A verified blob already under its final path."""

    def __init__(self, digest: Digest, file: IO[bytes], size: int) -> None:
        self.digest = digest
        self.file = file
        self.size = size

    async def sendable(self, position: int, end: int) -> int:
        return end

    def close(self) -> None:
        self.file.close()


class BlobFill:
    """One upstream download of a blob into the store, shared by every waiting client."""

    def __init__(self, writer: BlobWriter, executor: Executor) -> None:
        self.digest = writer.digest
        self.writer = writer
        self.size: int | None = None
        self.written = 0
        self.verified = False
        self.error: MirrorError | None = None
        self.started = asyncio.Event()  # set once the size is known or the fill failed
        self._progress = asyncio.Event()
        self._executor = executor
        self._stop = False  # set to end a worker-thread receive early

    def open_reader(self) -> "FillReader":
        """A reader with its own descriptor on the temp file: it stays valid after the file
        is renamed into place (same inode) or unlinked on failure."""
        return FillReader(self, open(self.writer.temp_path, "rb"))

    async def run(self, size: int | None, chunks: AsyncIterator[bytes]) -> None:
        """Consume the upstream body; set `verified` or `error`. Never raises.

        Chunks arrive as the socket delivers them and are batched while the worker thread
        hashes and writes the previous batch: no join copies, one thread hop per batch,
        and at most `_MAX_BATCH` bytes held in memory.
        """
        loop = asyncio.get_running_loop()
        self.size = size
        self.started.set()
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
            if size is not None and self.written != size:
                raise UpstreamBadGateway(f"upstream sent {self.written} of {size} bytes of "
                                         f"{self.digest}")
            await self._verify_and_persist(loop)
        except BaseException as exc:  # cancellation included: never leave a temp file behind
            if pending is not None:
                await asyncio.gather(pending, return_exceptions=True)
            await self._fail(loop, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self.started.set()
            self._notify()

    async def run_from_socket(self, size: int, prefix: bytes, sock: socket.socket,
                              timeout: float) -> None:
        """Like `run`, for a body detached from the event loop: one worker thread receives
        into a reused buffer, hashes and writes; the loop only hears of progress."""
        loop = asyncio.get_running_loop()
        self.size = size
        self.started.set()
        try:
            await loop.run_in_executor(self._executor, self._receive, loop, size, prefix,
                                       sock, timeout)
            await self._verify_and_persist(loop)
        except BaseException as exc:
            self._stop = True
            await self._fail(loop, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            sock.close()
            self.started.set()
            self._notify()

    async def _fail(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        """Delete the temp file of a failed or cancelled fill and record why; readers see
        the error on their next wait."""
        await loop.run_in_executor(self._executor, self.writer.abort)
        self.error = exc if isinstance(exc, MirrorError) else UpstreamBadGateway(
            f"download of {self.digest} from upstream failed")

    async def _verify_and_persist(self, loop: asyncio.AbstractEventLoop) -> None:
        """Release the held-back last bytes as soon as the digest matches; the fsync and
        rename (slow on a disk with a lot of dirty data) happen after that."""
        self.writer.verify()
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

    def _receive(self, loop: asyncio.AbstractEventLoop, size: int, prefix: bytes,
                 sock: socket.socket, timeout: float) -> None:
        """Worker thread: receive into reused buffers and append them to the temp file,
        while a second thread hashes them (each of the three releases the GIL)."""
        sock.settimeout(timeout)
        self.writer.write(prefix)
        received = len(prefix)
        reported = 0
        free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(_RECEIVE_BUFFERS):
            free.put(memoryview(bytearray(_RECEIVE_BUFFER)))
        to_hash: queue.SimpleQueue = queue.SimpleQueue()
        hasher = threading.Thread(target=self._hash_buffers, args=(to_hash, free),
                                  name="mirror-hash", daemon=True)
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
                if received - reported >= _PROGRESS_STEP or received == size:
                    loop.call_soon_threadsafe(self._advance, received - reported)
                    reported = received
        finally:
            to_hash.put(None)
            hasher.join()
        if received != size:
            raise UpstreamBadGateway(f"upstream sent {received} of {size} bytes of "
                                     f"{self.digest}")

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

    def fail(self, error: MirrorError) -> None:
        """Fail before any byte arrived (upstream refused the request)."""
        self.writer.abort()
        self.error = error
        self.started.set()
        self._notify()

    def _write(self, batch: list[bytes]) -> int:
        self.writer.write_many(batch)
        return sum(map(len, batch))

    def _advance(self, count: int) -> None:
        self.written += count
        self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def sendable(self, position: int, end: int) -> int:
        while True:
            if self.error is not None:
                raise self.error
            bound = end if self.verified else min(self.written, end - 1)
            if bound > position:
                return bound
            await self._progress.wait()


class FillReader:
    """One client's view of a fill: its own descriptor, the fill's progress."""

    def __init__(self, fill: BlobFill, file: IO[bytes]) -> None:
        self.fill = fill
        self.digest = fill.digest
        self.file = file

    @property
    def size(self) -> int | None:
        return self.fill.size

    async def sendable(self, position: int, end: int) -> int:
        return await self.fill.sendable(position, end)

    def close(self) -> None:
        self.file.close()


def read_chunk(file: IO[bytes], position: int, count: int) -> bytes:
    """pread, for responses that cannot use sendfile (chunked encoding, TLS)."""
    return os.pread(file.fileno(), count, position)


class PartialFollower:
    """A blob another instance is filling into the shared partial file: stream that file
    as it grows, for a client of this instance.

    What a network filesystem shows of a file growing on another node can lag or be stale,
    so every byte is hashed here before it is sent, and the last byte goes out only when
    the filling instance has renamed the verified blob into place and these bytes hash to
    the digest. If the filling instance dies (its heartbeat stops), this instance takes
    the fill over and the client's response goes on from where it was.
    """

    def __init__(self, digest: Digest, partial: Path, final: Path, size: int,
                 stale_seconds: float, takeover: Callable[[], "FillReader | None"],
                 executor: Executor) -> None:
        self.digest = digest
        self.size: int | None = size
        self._partial = partial
        self._final = final
        self._stale_seconds = stale_seconds
        self._takeover = takeover
        self._executor = executor
        self.file: IO[bytes] = open(partial, "rb")
        self._inner: FillReader | None = None
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._final_open = False

    async def sendable(self, position: int, end: int) -> int:
        size = self.size or 0
        while True:
            if self._inner is not None:
                bound = await self._inner.sendable(position, end)
            else:
                bound = await self._follow(position, end)
            if bound is None:
                continue
            if bound == size and end == size:
                await self._hash_to(bound)
                if self._hash.hexdigest() != self.digest.hex:
                    raise UpstreamBadGateway(f"bytes of {self.digest} read from the shared "
                                             "fill did not verify")
            elif end == size:
                await self._hash_to(bound)
            return bound

    async def _follow(self, position: int, end: int) -> int | None:
        """The next bound from the other instance's file; None after a switch of source."""
        last_growth = time.monotonic()
        seen = -1
        while True:
            if not self._final_open and os.path.exists(self._final):
                # A fresh open of the renamed file: close-to-open consistency on NFS.
                self.file.close()
                self.file = open(self._final, "rb")
                self._final_open = True
            available = os.fstat(self.file.fileno()).st_size
            bound = end if self._final_open else min(available, end - 1)
            if bound > position:
                return bound
            if available != seen:
                seen, last_growth = available, time.monotonic()
            elif time.monotonic() - last_growth > 1.0 and self._owner_died():
                reader = self._takeover()
                if reader is not None:  # this instance fills it now
                    self.file.close()
                    self._inner, self.file = reader, reader.file
                else:  # another instance took over first: follow its new file
                    self.file.close()
                    self.file = open(self._partial, "rb")
                return None
            await asyncio.sleep(_FOLLOW_POLL)

    def _owner_died(self) -> bool:
        try:
            idle = time.time() - os.stat(self._partial).st_mtime
        except FileNotFoundError:
            return not os.path.exists(self._final)  # gone without a result: it failed
        return idle > self._stale_seconds

    async def _hash_to(self, bound: int) -> None:
        if bound > self._hashed:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._hash_range,
                                                             bound)

    def _hash_range(self, bound: int) -> None:
        while self._hashed < bound:
            chunk = os.pread(self.file.fileno(), min(_RECEIVE_BUFFER * 4, bound - self._hashed),
                             self._hashed)
            if not chunk:
                raise UpstreamBadGateway(f"the shared fill of {self.digest} was cut short")
            self._hash.update(chunk)
            self._hashed += len(chunk)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
        else:
            self.file.close()
