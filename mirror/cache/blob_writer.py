"""Writing one blob into the store: hashed while written, visible only once verified.

The content store (`store.py`) decides every path; this module only writes, verifies and
renames, so the on-disk layout stays in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from mirror.cache.dirs import rename_into
from mirror.errors import DigestMismatch
from mirror.reference import Digest

_READ_CHUNK = 4 * 1024 * 1024


class BlobWriter:
    """Writes one blob to a temp file while hashing it; `commit` verifies and renames it in.

    Methods are blocking and meant to run in a worker thread: hashlib and os.write release
    the GIL on large buffers, so hashing overlaps the event loop's network I/O.
    """

    def __init__(
        self,
        digest: Digest,
        final_path: Path,
        temp_path: Path,
        size_path: Path | None = None,
        *,
        resume: bool = False,
    ) -> None:
        """Creates the temp file exclusively (O_EXCL holds across NFS, GPFS, Lustre and
        GlusterFS clients): with the digest's partial path, creating it claims the fill.
        The store chooses every path; `size_path` is where a shared fill announces its size.
        `resume` appends to an existing temp file instead (a fill taken over from an
        instance that died); its bytes count once `hash_existing` has read them."""
        self.digest = digest
        self.final_path = final_path
        self.temp_path = temp_path
        self.size_path = size_path
        self._hash = hashlib.sha256()
        flags = os.O_WRONLY if resume else os.O_WRONLY | os.O_CREAT | os.O_EXCL
        self._fd = os.open(self.temp_path, flags, 0o644)
        self.size = os.lseek(self._fd, 0, os.SEEK_END)

    def hash_existing(self) -> None:
        """Hash the bytes a resumed temp file already holds, before anything is appended."""
        with open(self.temp_path, "rb") as existing:
            remaining = self.size
            while remaining:
                chunk = existing.read(min(remaining, _READ_CHUNK))
                if not chunk:
                    raise DigestMismatch(f"the partial file of {self.digest} was cut short")
                self._hash.update(chunk)
                remaining -= len(chunk)

    def announce_size(self, size: int) -> None:
        """Tell other instances following this fill how big the blob will be."""
        if self.size_path is not None:
            temp = self.size_path.with_name(f".{self.size_path.name}.{os.getpid()}")
            try:
                temp.write_text(str(size))
                os.rename(temp, self.size_path)
            except BaseException:  # a full disk must not leave the temp file behind
                temp.unlink(missing_ok=True)
                raise

    def write(self, chunk: bytes | memoryview) -> None:
        self.write_many([chunk])

    def write_many(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Hash and append chunks (one writev where the kernel takes them all)."""
        for chunk in chunks:
            self.hash(chunk)
        self.append(chunks)

    def hash(self, chunk: bytes | memoryview) -> None:
        """Feed the digest; with `append`, lets two threads share one blob's work."""
        self._hash.update(chunk)

    def append(self, chunks: Sequence[bytes | memoryview]) -> None:
        views = [memoryview(chunk) for chunk in chunks if chunk]
        while views:
            written = os.writev(self._fd, views)
            self.size += written
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    def verify(self) -> None:
        """Check the digest of everything written; on mismatch delete the file and raise."""
        actual = self._hash.hexdigest()
        if actual != self.digest.hex:
            self.abort()
            raise DigestMismatch(f"upstream content for {self.digest} hashed to sha256:{actual}")

    def seal(self) -> None:
        """fsync and close the temp file, keeping it out of sight until `persist`: lets a
        caller verify many blobs before making any of them visible."""
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def persist(self) -> None:
        """fsync and rename the verified file into place, read-only. The size note goes
        first, so once the blob is visible nothing of its fill is left in tmp/ (followers
        arriving in between find the blob a moment later)."""
        self.seal()
        os.chmod(self.temp_path, 0o444)
        self._forget_size()
        rename_into(self.temp_path, self.final_path)

    def commit(self) -> None:
        self.verify()
        self.persist()

    def release(self) -> None:
        """Close the temp file but leave it and the size note in place: a shared fill
        another instance takes over from where it ended (this one is shutting down)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)

    def abort(self) -> None:
        """Delete the temp file and size note; a close reporting a late write error (NFS
        does, on a full disk) must not keep them."""
        self.release()
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass
        self._forget_size()

    def _forget_size(self) -> None:
        if self.size_path is not None:
            try:
                os.unlink(self.size_path)
            except FileNotFoundError:
                pass
