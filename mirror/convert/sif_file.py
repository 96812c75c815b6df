"""Turn the squashfs file tar2sqfs wrote into the SIF file, in place: the SIF's header,
descriptors and small objects go in front of the squashfs.

Where the filesystem can insert a range at the start of a file (ext4, XFS:
FALLOC_FL_INSERT_RANGE), no byte of the squashfs is copied. Elsewhere (tmpfs, NFS, Lustre,
GlusterFS) the squashfs is copied behind the prefix from its end backwards, the source
truncated after each piece, so the disk holds at most one piece more than the SIF.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from pathlib import Path

_FALLOC_FL_INSERT_RANGE = 0x20
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ENODEV})
COPY_PIECE = 64 << 20


def put_in_front(path: Path, prefix: bytes, *, insert: bool = True) -> None:
    """Make the file at `path` start with `prefix` (a multiple of 4096 bytes) followed by
    its former content. `insert=False` forces the copy (for tests of that path)."""
    with open(path, "r+b") as file:
        if insert and _insert_range(file.fileno(), len(prefix)):
            _pwrite_all(file.fileno(), prefix, 0)
            return
    _copy_behind(path, prefix)


def sha256_and_sync(path: Path) -> tuple[str, int]:
    """The file's sha256 (hex) and size, after flushing it to disk."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        for piece in iter(lambda: file.read(1 << 20), b""):
            digest.update(piece)
            size += len(piece)
        os.fsync(file.fileno())
    return digest.hexdigest(), size


def _insert_range(fd: int, length: int) -> bool:
    """Insert `length` zero bytes at offset 0 of `fd`; False where the filesystem can't."""
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except AttributeError:
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if fallocate(fd, _FALLOC_FL_INSERT_RANGE, 0, length) == 0:
        return True
    number = ctypes.get_errno()
    if number in _UNSUPPORTED:
        return False
    raise OSError(number, os.strerror(number))


def _copy_behind(path: Path, prefix: bytes) -> None:
    aside = path.with_name(path.name + ".squashfs")
    os.rename(path, aside)
    try:
        with open(aside, "r+b") as source, open(path, "xb") as target:
            target.write(prefix)
            target.flush()
            end = source.seek(0, os.SEEK_END)
            while end > 0:
                start = max(0, end - COPY_PIECE)
                source.seek(start)
                _pwrite_all(target.fileno(), source.read(end - start), len(prefix) + start)
                source.truncate(start)
                end = start
    finally:
        try:
            os.unlink(aside)
        except FileNotFoundError:
            pass


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
