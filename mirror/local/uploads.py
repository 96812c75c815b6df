"""Blob uploads to the local namespace: the blob side of the OCI push API.

Sessions live in the store (`uploads/<id>/`), so an upload one instance started goes on
through another. Bytes are streamed from the request to the session's data file at the
offset the file's size says, and only a file whose sha256 matches the digest the client
names is renamed into `blobs/`. Each process keeps the running hash of the uploads it
appended to last, so finishing one rarely reads the file again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.cache.metadata import MetadataCache
from mirror.cache.store import ContentStore, UploadRecord, is_upload_id
from mirror.cache.usage import StoreUsage
from mirror.config import LocalConfig
from mirror.errors import (
    BlobUploadUnknown,
    DigestInvalid,
    MirrorError,
    PushDenied,
    RangeInvalid,
)
from mirror.local.quota import NamespaceQuota, NamespaceUse
from mirror.metrics import series
from mirror.reference import Digest, Repository

_WRITE_BUFFER = 1024 * 1024  # bytes gathered from the request per write (and hash) call
_READ_CHUNK = 1024 * 1024  # bytes per read when a file is hashed again
_HASHES_KEPT = 256  # running hashes a process keeps (the uploads it appended to last)


class OffsetMismatch(RangeInvalid):
    """A chunk that does not start where the upload ends (`size`: bytes held so far)."""

    def __init__(self, size: int, start: int) -> None:
        super().__init__(f"the upload holds {size} bytes; a chunk starting at {start} does not fit")
        self.size = size


@dataclass(slots=True)
class _RunningHash:
    """sha256 of an upload's first `offset` bytes."""

    offset: int
    hasher: Any  # hashlib's sha256 object


class BlobUploads:
    """Start, append to, finish, cancel and mount blob uploads of local repositories."""

    def __init__(
        self,
        store: ContentStore,
        metadata: MetadataCache,
        local: LocalConfig,
        executor: Executor,
        clock: Callable[[], float] = time.time,
        usage: StoreUsage | None = None,
    ) -> None:
        """`usage`: the store's size for /metrics, told of each blob new to the store."""
        self.quota = NamespaceQuota(store, local.quota, executor)
        self._store = store
        self._metadata = metadata
        self._admins = local.admins
        self._executor = executor
        self._clock = clock
        self._usage = usage
        self._hashes: OrderedDict[str, _RunningHash] = OrderedDict()
        # One request at a time per upload in this process; chunks of one upload come in
        # order from one client, so other instances need no lock (the digest catches a
        # client that sends two at once through two instances).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- sessions ----------------------------------------------------------------------------
    async def start(self, repo: Repository, user: str | None) -> UploadRecord:
        return await self._run(self._store.start_upload, repo, user, self._clock())

    async def session(self, upload_id: str, repo: Repository, user: str | None) -> UploadRecord:
        """The upload `upload_id` of `repo`, if `user` may continue it (who started it, or
        an admin); `BlobUploadUnknown` for a malformed id, one finished or cancelled, or
        one of another repository."""
        if not is_upload_id(upload_id):
            raise BlobUploadUnknown(f"no upload {upload_id[:80]!r}")
        record = await self._run(self._store.read_upload, upload_id)
        if record is None or record.repository != repo:
            raise BlobUploadUnknown(f"no upload {upload_id} in {repo}")
        if record.user != user and user not in self._admins:
            raise PushDenied(f"upload {upload_id} was started by another user")
        return record

    async def cancel(self, record: UploadRecord) -> None:
        async with self._lock(record.upload_id):
            await self._discard(record.upload_id)

    # -- bytes -------------------------------------------------------------------------------
    async def append(
        self,
        record: UploadRecord,
        chunks: AsyncIterable[bytes],
        received: Callable[[int], None],
        start: int | None = None,
        digest: Digest | None = None,
    ) -> int:
        """Stream `chunks` onto the end of the upload (which must be at `start`, if given)
        and return its size. `received` is told of each chunk as it arrives. Bytes written
        before the body broke off stay (the client may resume); a quota breach removes the
        session. `digest`, when known, lets a blob the namespace holds already pass."""
        async with self._lock(record.upload_id):
            size = await self._size(record.upload_id)
            if start is not None and start != size:
                raise OffsetMismatch(size, start)
            use = await self.quota.use(record.repository) if self.quota.limit is not None else None
            try:
                return await self._stream(record, size, chunks, received, use, digest)
            except MirrorError:
                series.PUSHES.labels(series.PUSHED_BLOB, series.REFUSED).inc()
                await self._discard(record.upload_id)
                raise

    async def _stream(
        self,
        record: UploadRecord,
        size: int,
        chunks: AsyncIterable[bytes],
        received: Callable[[int], None],
        use: NamespaceUse | None,
        digest: Digest | None,
    ) -> int:
        running = self._hashes.pop(record.upload_id, None)
        if running is not None and running.offset != size:
            running = None  # another instance appended since: finishing reads the file
        if running is None and size == 0:
            running = _RunningHash(0, hashlib.sha256())
        path = self._store.upload_data_path(record.upload_id)
        fd = await self._run(os.open, path, os.O_WRONLY)
        writer = _ChunkWriter(fd, size, running, self._executor)
        try:
            async for chunk in chunks:
                received(len(chunk))
                if use is not None:
                    self.quota.refuse_over(use, writer.end + len(chunk), digest)
                await writer.add(chunk)
        finally:
            try:
                await writer.flush()  # what arrived stays, even from a body that broke off
            finally:
                os.close(fd)
            if writer.running is not None:
                self._keep_hash(record.upload_id, writer.running)
        return writer.end

    async def finish(self, record: UploadRecord, digest: Digest) -> bool:
        """Verify the upload against `digest` and the quota, move it into `blobs/` and link
        it to its repository; True when the blob was new to the store. A mismatch or a
        quota breach removes the session."""
        async with self._lock(record.upload_id):
            path = self._store.upload_data_path(record.upload_id)
            running = self._hashes.pop(record.upload_id, None)
            size, actual = await self._run(_sync_and_hash, path, running)
            try:
                if actual != digest.hex:
                    raise DigestInvalid(
                        f"the {size} bytes uploaded have digest sha256:{actual}, not {digest}"
                    )
                await self.quota.check(record.repository, size, digest)
            except MirrorError:
                series.PUSHES.labels(series.PUSHED_BLOB, series.REFUSED).inc()
                await self._discard(record.upload_id)
                raise
            stored = await self._run(self._store.put_file, digest, path)
            if stored and self._usage is not None:
                self._usage.added(digest, size)
            self._metadata.link_pushed_blob(record.repository, digest)
            await self._discard(record.upload_id)
        self.quota.forget(record.repository)
        series.PUSHES.labels(series.PUSHED_BLOB, series.STORED).inc()
        return stored

    async def mount(self, repo: Repository, digest: Digest, from_repo: Repository) -> bool:
        """Link blob `digest` of `from_repo` (which the caller may read) into `repo`, if
        `from_repo` has it and the quota allows; False means: upload it instead."""
        size = self._store.blob_size(digest)
        if size is None or not self._metadata.may_serve_blob(from_repo, digest):
            return False
        try:
            await self.quota.check(repo, size, digest)
        except MirrorError:
            return False
        self._metadata.link_pushed_blob(repo, digest)
        self.quota.forget(repo)
        series.PUSHES.labels(series.PUSHED_BLOB, series.STORED).inc()
        return True

    # -- helpers ------------------------------------------------------------------------------
    def _lock(self, upload_id: str) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        return lock

    def _keep_hash(self, upload_id: str, running: _RunningHash) -> None:
        self._hashes[upload_id] = running
        while len(self._hashes) > _HASHES_KEPT:
            self._hashes.popitem(last=False)

    async def _size(self, upload_id: str) -> int:
        record = await self._run(self._store.read_upload, upload_id)
        if record is None:
            raise BlobUploadUnknown(f"no upload {upload_id}")  # finished or cancelled meanwhile
        return record.size

    async def _discard(self, upload_id: str) -> None:
        self._hashes.pop(upload_id, None)
        await self._run(self._store.delete_upload, upload_id)

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


class _ChunkWriter:
    """Gathers chunks into buffers of `_WRITE_BUFFER` bytes, each written at its offset
    (and hashed) in a worker thread while the next one fills."""

    def __init__(
        self, fd: int, offset: int, running: _RunningHash | None, executor: Executor
    ) -> None:
        self.end = offset  # the offset after every byte added
        self.running = running
        self._fd = fd
        self._written = offset
        self._executor = executor
        self._buffer = bytearray()
        self._pending: asyncio.Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.end += len(chunk)
        if len(self._buffer) >= _WRITE_BUFFER:
            await self._dispatch()

    async def flush(self) -> None:
        """Write what is gathered and wait for every write; one that failed drops the
        running hash (the file is hashed again at the end)."""
        try:
            if self._buffer:
                await self._dispatch()
            if self._pending is not None:
                await self._pending
        except BaseException:
            self.running = None
            raise

    async def _dispatch(self) -> None:
        if self._pending is not None:
            await self._pending
        data, self._buffer = self._buffer, bytearray()
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(
            self._executor, _write_at, self._fd, data, self._written, self.running
        )
        self._written += len(data)


def _write_at(fd: int, data: bytearray, offset: int, running: _RunningHash | None) -> None:
    view = memoryview(data)
    while view:
        count = os.pwrite(fd, view, offset)
        view, offset = view[count:], offset + count
    if running is not None:
        running.hasher.update(data)
        running.offset += len(data)


def _sync_and_hash(path: Path, running: _RunningHash | None) -> tuple[int, str]:
    """fsync the upload's file; its size and sha256 (from `running` if that covers it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise BlobUploadUnknown("the upload was finished or cancelled meanwhile") from None
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if running is not None and running.offset == size:
            return size, running.hasher.hexdigest()
        hasher = hashlib.sha256()
        while chunk := os.read(fd, _READ_CHUNK):
            hasher.update(chunk)
        return size, hasher.hexdigest()
    finally:
        os.close(fd)
