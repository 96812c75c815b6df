"""The uncompressed bytes of one image layer, read in order from its blob file.

gzip is inflated here with zlib, in pieces of at most `PIECE` bytes whatever the input;
zstd by Debian's `zstd -dc` in a child process: python-zstandard's streaming readers end a
truncated frame as if it were complete, and its decompressobj has no output bound (33 KB
of zstd inflate to 1 GiB in one call), while the CLI streams in bounded memory, reports
both damages, and runs on another core. The kind is sniffed from the first bytes, as
containerd does; the media type only has to be one of `LAYER_MEDIA_TYPES`. Every byte
read is counted against a `ByteBudget`, which stops decompression bombs.
"""

from __future__ import annotations

import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PIECE = 1 << 20  # largest piece of output kept in memory at once
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

LAYER_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)


class LayerDamaged(Exception):
    """The layer's bytes are not a whole gzip/zstd stream (corrupt or truncated)."""


class BudgetExceeded(Exception):
    """More uncompressed bytes than the conversion may read."""


class ByteBudget:
    """How many uncompressed bytes all layers of one conversion may still produce."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise BudgetExceeded(f"more than {self.limit} bytes uncompressed")


class LayerStream:
    """A layer's tar bytes, read in order (`read(n)`)."""

    def __init__(self, path: Path, budget: ByteBudget) -> None:
        self._file = open(path, "rb")
        self._budget = budget
        self._zstd: subprocess.Popen[bytes] | None = None
        self._piece = b""
        self._position = 0
        magic = self._file.read(4)
        self._file.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            self._pieces: Iterator[bytes] = _gunzip(self._file)
        elif magic == _ZSTD_MAGIC:
            self._pieces = self._unzstd(path)
        else:
            self._pieces = iter(lambda: self._file.read(PIECE), b"")

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (fewer at the end of a piece); b"" at the end of the layer."""
        while self._position >= len(self._piece):
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._budget.take(len(piece))
            self._piece, self._position = piece, 0
        end = len(self._piece) if size < 0 else self._position + size
        data = self._piece[self._position : end]
        self._position += len(data)
        return data

    def close(self) -> None:
        if self._zstd is not None and self._zstd.poll() is None:
            self._zstd.kill()
        if self._zstd is not None:
            self._zstd.wait()
            if self._zstd.stdout is not None:
                self._zstd.stdout.close()
        self._file.close()

    def __enter__(self) -> LayerStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unzstd(self, path: Path) -> Iterator[bytes]:
        with tempfile.TemporaryFile() as errors:
            self._zstd = subprocess.Popen(
                ["zstd", "-d", "-c", "-q", "--no-progress", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
            assert self._zstd.stdout is not None
            yield from iter(lambda: self._zstd.stdout.read(PIECE), b"")  # type: ignore[union-attr]
            if self._zstd.wait() != 0:
                errors.seek(0)
                said = errors.read(2000).decode(errors="replace").strip()
                reason = said.rpartition(" : ")[2] or said or f"exit {self._zstd.returncode}"
                raise LayerDamaged(f"not a whole zstd stream ({reason.strip()})")


def _gunzip(source: BinaryIO) -> Iterator[bytes]:
    """Every gzip member of `source` inflated, in pieces of at most PIECE bytes; zero bytes
    after a member are padding, anything else is damage."""
    inflater: zlib._Decompress | None = None
    pending = b""
    while True:
        if not pending:
            pending = source.read(PIECE)
            if not pending:
                if inflater is None:
                    return
                tail = inflater.flush()  # output zlib held back when a piece was full
                if tail:
                    yield tail
                if not inflater.eof:
                    raise LayerDamaged("the gzip stream is truncated")
                return
        if inflater is None:
            if not pending.strip(b"\0"):
                pending = b""
                continue
            if not pending.startswith(_GZIP_MAGIC[: len(pending)]):
                raise LayerDamaged("garbage after the gzip stream")
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            piece = inflater.decompress(pending, PIECE)
        except zlib.error as exc:
            raise LayerDamaged(f"corrupt gzip data ({exc})") from None
        if inflater.eof:
            pending, inflater = inflater.unused_data, None
        else:
            pending = inflater.unconsumed_tail
        if piece:
            yield piece
