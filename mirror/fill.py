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
import os
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import IO, Protocol

from .errors import MirrorError, UpstreamBadGateway
from .reference import Digest
from .store import BlobWriter


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

    def open_reader(self) -> "FillReader":
        """A reader with its own descriptor on the temp file: it stays valid after the file
        is renamed into place (same inode) or unlinked on failure."""
        return FillReader(self, open(self.writer.temp_path, "rb"))

    async def run(self, size: int | None, chunks: AsyncIterator[bytes]) -> None:
        """Consume the upstream body; set `verified` or `error`. Never raises."""
        loop = asyncio.get_running_loop()
        self.size = size
        self.started.set()
        pending: asyncio.Future | None = None
        try:
            async for chunk in chunks:
                if pending is not None:
                    self._advance(await pending)
                pending = loop.run_in_executor(self._executor, self._write, chunk)
            if pending is not None:
                self._advance(await pending)
                pending = None
            if size is not None and self.written != size:
                raise UpstreamBadGateway(f"upstream sent {self.written} of {size} bytes of "
                                         f"{self.digest}")
            await loop.run_in_executor(self._executor, self.writer.commit)
            self.verified = True
        except BaseException as exc:  # cancellation included: never leave a temp file behind
            if pending is not None:
                await asyncio.gather(pending, return_exceptions=True)
            await loop.run_in_executor(self._executor, self.writer.abort)
            self.error = exc if isinstance(exc, MirrorError) else UpstreamBadGateway(
                f"download of {self.digest} from upstream failed")
            if not isinstance(exc, (MirrorError, Exception)):
                raise
        finally:
            self.started.set()
            self._notify()

    def fail(self, error: MirrorError) -> None:
        """Fail before any byte arrived (upstream refused the request)."""
        self.writer.abort()
        self.error = error
        self.started.set()
        self._notify()

    def _write(self, chunk: bytes) -> int:
        self.writer.write(chunk)
        return len(chunk)

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
