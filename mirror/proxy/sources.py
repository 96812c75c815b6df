"""What a blob response reads: the cached file, a share of this instance's fill, or another
instance's fill followed through the shared partial file. Each is a `BlobSource`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import IO, Protocol

from mirror.errors import UpstreamBadGateway
from mirror.proxy.fill import BlobFill
from mirror.reference import Digest

_FOLLOW_POLL = 0.05
_HASH_CHUNK = 4 * 1024 * 1024


class BlobSource(Protocol):
    """What the HTTP layer (and prefetch) need to send blob bytes, wherever they come from."""

    @property
    def digest(self) -> Digest: ...

    @property
    def size(self) -> int | None:
        """The blob's length; None only while an upstream that sent no length is still
        sending (known once `sendable` has returned its `end`)."""
        ...

    @property
    def file(self) -> IO[bytes]:
        """Where the bytes are read from (may change while another instance's fill is
        followed or taken over)."""
        ...

    async def sendable(self, position: int, end: int) -> int:
        """Wait until bytes after `position` may be sent; return the exclusive bound (<= end).
        An `end` that is the blob's end is only returned once the content is verified (a
        range ending earlier is sent as its bytes arrive). Raises if the fill failed."""
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


class FillReader:
    """One client's share of this instance's fill: its own descriptor on the temp file
    (still valid once the file is renamed into place or unlinked), the fill's progress."""

    def __init__(self, fill: BlobFill) -> None:
        self._fill = fill
        self.digest = fill.digest
        self.file: IO[bytes] = open(fill.writer.temp_path, "rb")

    @property
    def size(self) -> int | None:
        return self._fill.size

    async def sendable(self, position: int, end: int) -> int:
        return await self._fill.sendable(position, end)

    def close(self) -> None:
        self.file.close()


def read_chunk(file: IO[bytes], position: int, count: int) -> bytes:
    """pread, for responses that cannot use sendfile (chunked encoding, TLS)."""
    return os.pread(file.fileno(), count, position)


class PartialFollower:
    """A blob another instance is filling into the shared partial file: stream that file
    as it grows, for a client of this instance.

    What a network filesystem shows of a file growing on another node can lag or be stale,
    so every byte of a whole-blob response is hashed here before it is sent, and the last
    byte goes out only when the filling instance has renamed the verified blob into place
    and these bytes hash to the digest (a range ending before the blob's end is sent as its
    bytes arrive). If the filling instance dies (its heartbeat stops), this instance takes
    the fill over and the client's response goes on from where it was.
    """

    def __init__(
        self,
        digest: Digest,
        partial: Path,
        final: Path,
        size: int,
        stale_seconds: float,
        takeover: Callable[[], FillReader | None],
        executor: Executor,
    ) -> None:
        self.digest = digest
        self.size = size
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
        size = self.size
        while True:
            bound = (
                await self._inner.sendable(position, end)
                if self._inner is not None
                else await self._follow(position, end)
            )
            if bound is None:
                continue
            if bound == size and end == size:
                await self._hash_to(bound)
                if self._hash.hexdigest() != self.digest.hex:
                    raise UpstreamBadGateway(
                        f"bytes of {self.digest} read from the shared fill did not verify"
                    )
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
            held_back = 1 if end == self.size else 0
            bound = end if self._final_open else min(available, end - held_back)
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
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._hash_range, bound
            )

    def _hash_range(self, bound: int) -> None:
        while self._hashed < bound:
            chunk = os.pread(
                self.file.fileno(), min(_HASH_CHUNK, bound - self._hashed), self._hashed
            )
            if not chunk:
                raise UpstreamBadGateway(f"the shared fill of {self.digest} was cut short")
            self._hash.update(chunk)
            self._hashed += len(chunk)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
        else:
            self.file.close()
