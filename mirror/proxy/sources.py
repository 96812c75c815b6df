"""What a blob response reads: the cached file, a share of this instance's fill, another
instance's fill followed through the shared partial file, or (when the store refuses the
blob) the upstream's body passed through. Each is a `BlobSource`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

from mirror.errors import StoreRefused, UpstreamBadGateway
from mirror.metrics import series
from mirror.proxy.fill import BlobFill
from mirror.proxy.passthrough import PassThroughBlob
from mirror.reference import Digest

_FOLLOW_POLL = 0.05
_HASH_CHUNK = 4 * 1024 * 1024


class BlobSize(NamedTuple):
    """A HEAD's answer: the blob's length, and where it came from (`series.HIT`: the store;
    `FILL_FOLLOWER`: a download or upstream HEAD running for another request;
    `FILL_LEADER`: an upstream HEAD of this request's), for the access log."""

    size: int
    cache: str


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
    def file(self) -> IO[bytes] | None:
        """Where the bytes are read from, for sendfile (may change while another instance's
        fill is followed or taken over); None when they are not in a file (`read` them)."""
        ...

    @property
    def cache_result(self) -> str:
        """Where the bytes come from now, as `series.BLOB_BYTES_SENT` labels them: the
        cache, a fill this request started or joined, or the upstream passed through."""
        ...

    async def sendable(self, position: int, end: int) -> int:
        """Wait until bytes after `position` may be sent; return the exclusive bound (<= end).
        An `end` that is the blob's end is only returned once the content is verified (a
        range ending earlier is sent as its bytes arrive). Raises if the fill failed."""
        ...

    def read(self, position: int, count: int) -> bytes:
        """Up to `count` bytes at `position`, below the bound `sendable` returned."""
        ...

    def close(self) -> None: ...


class _FileSource:
    """A source whose bytes are in `file`."""

    file: IO[bytes]

    def read(self, position: int, count: int) -> bytes:
        return read_chunk(self.file, position, count)


class CachedBlob(_FileSource):
    """A verified blob already under its final path."""

    cache_result = series.HIT

    def __init__(self, digest: Digest, file: IO[bytes], size: int) -> None:
        self.digest = digest
        self.file = file
        self.size = size

    async def sendable(self, position: int, end: int) -> int:
        return end

    def close(self) -> None:
        self.file.close()


class FillReader(_FileSource):
    """One client's share of this instance's fill: its own descriptor on the temp file
    (still valid once the file is renamed into place or unlinked), the fill's progress."""

    def __init__(self, fill: BlobFill, executor: Executor, *, leader: bool = False) -> None:
        self._fill = fill
        self._executor = executor
        self.digest = fill.digest
        self.file = open(fill.writer.temp_path, "rb")
        # Whether this request started the fill, or joined one running.
        self.cache_result = series.FILL_LEADER if leader else series.FILL_FOLLOWER

    @property
    def size(self) -> int | None:
        return self._fill.size

    async def sendable(self, position: int, end: int) -> int:
        return await self._fill.sendable(position, end)

    async def prefix_hash(self, count: int) -> Any:
        """sha256 of the first `count` bytes, as this reader sends them."""
        prefix = _FileHash()
        await prefix.extend_to(self.file, count, self._executor)
        return prefix.hash

    def close(self) -> None:
        self.file.close()


def read_chunk(file: IO[bytes], position: int, count: int) -> bytes:
    """pread, for responses that cannot use sendfile (chunked encoding, TLS)."""
    return os.pread(file.fileno(), count, position)


class _FileHash:
    """sha256 of a blob's first `length` bytes, read back from the file they were sent from."""

    def __init__(self) -> None:
        self.hash: Any = hashlib.sha256()
        self.length = 0

    async def extend_to(self, file: IO[bytes], bound: int, executor: Executor) -> None:
        if bound > self.length:
            await asyncio.get_running_loop().run_in_executor(
                executor, self._extend, file.fileno(), bound
            )

    def _extend(self, fd: int, bound: int) -> None:
        while self.length < bound:
            chunk = os.pread(fd, min(_HASH_CHUNK, bound - self.length), self.length)
            if not chunk:
                raise UpstreamBadGateway("a partial blob file was cut short while being sent")
            self.hash.update(chunk)
            self.length += len(chunk)


class PartialFollower(_FileSource):
    """A blob another instance is filling into the shared partial file: stream that file
    as it grows, for a client of this instance.

    What a network filesystem shows of a file growing on another node can lag or be stale,
    so every byte of a whole-blob response is hashed here before it is sent, and the last
    byte goes out only when the filling instance has renamed the verified blob into place
    and these bytes hash to the digest (a range ending before the blob's end is sent as its
    bytes arrive). If the filling instance dies (its heartbeat stops), this instance takes
    the fill over and the client's response goes on from where it was.
    """

    cache_result = series.FILL_FOLLOWER

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
        self.file = open(partial, "rb")
        self._inner: FillReader | None = None
        self._sent_hash = _FileHash()  # of the bytes sent so far, from the files they came from
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
            if end == size:
                await self._sent_hash.extend_to(self.file, bound, self._executor)
                if bound == size and self._sent_hash.hash.hexdigest() != self.digest.hex:
                    raise UpstreamBadGateway(
                        f"bytes of {self.digest} read from the shared fill did not verify"
                    )
            return bound

    async def prefix_hash(self, count: int) -> Any:
        """sha256 of the first `count` bytes, as this follower sends them."""
        await self._sent_hash.extend_to(self.file, count, self._executor)
        return self._sent_hash.hash.copy()

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
                # What was sent from this file is hashed before it is let go of: a later
                # switch of source vouches for it (`prefix_hash`).
                await self._sent_hash.extend_to(self.file, min(position, available), self._executor)
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

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
        else:
            self.file.close()


class _Refusable(BlobSource, Protocol):
    async def prefix_hash(self, count: int) -> Any: ...


class RefusalBypass:
    """A share of a fill (this instance's or another's) that goes on from the upstream when
    the store refuses the blob: the bytes already sent are vouched for by hashing them from
    the file they were sent from, and the rest comes from a `PassThroughBlob` of its own."""

    def __init__(self, inner: _Refusable, pass_through: Callable[[], PassThroughBlob]) -> None:
        self.digest = inner.digest
        self._inner = inner
        self._pass_through = pass_through
        self._bypass: PassThroughBlob | None = None
        self._sent = False  # whether `inner` has let any bytes go

    @property
    def size(self) -> int | None:
        return self._bypass.size if self._bypass is not None else self._inner.size

    @property
    def file(self) -> IO[bytes] | None:
        return self._bypass.file if self._bypass is not None else self._inner.file

    @property
    def cache_result(self) -> str:
        return (self._bypass or self._inner).cache_result

    async def sendable(self, position: int, end: int) -> int:
        if self._bypass is None:
            try:
                bound = await self._inner.sendable(position, end)
                self._sent = True
                return bound
            except StoreRefused:
                self._bypass = await self._switch(position)
        return await self._bypass.sendable(position, end)

    async def _switch(self, position: int) -> PassThroughBlob:
        size = self._inner.size
        # With nothing sent yet (a range the fill had not reached), there is nothing to
        # vouch for: the upstream's bytes are hashed from the first.
        prefix = await self._inner.prefix_hash(position) if self._sent else None
        bypass = self._pass_through()
        await bypass.begin(position, prefix)
        if size is not None and bypass.size not in (None, size):
            bypass.close()
            raise UpstreamBadGateway(f"upstream changed the size of {self.digest}")
        self._inner.close()
        return bypass

    def read(self, position: int, count: int) -> bytes:
        return (self._bypass or self._inner).read(position, count)

    def close(self) -> None:
        (self._bypass or self._inner).close()
