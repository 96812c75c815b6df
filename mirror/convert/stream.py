"""One tar stream of an image's final root filesystem plus the Apptainer runtime tree,
made from the layer blobs without unpacking anything on disk.

Pass one reads every layer's headers (content is decompressed and skipped, never kept) into
the merged tree, which decides what survives; pass two reads the layers again and writes
only the survivors, content streamed through in pieces, then the runtime entries. Layers
with no survivor are not read again.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from mirror.convert.image import Layer, SourceImage
from mirror.convert.layers import PIECE, BudgetExceeded, ByteBudget, LayerDamaged, LayerStream
from mirror.convert.runtime import RuntimeEntry, add_runtime, runtime_entries
from mirror.convert.tree import EntryRefused, Plan, RootfsTree
from mirror.errors import ConversionRefused

log = logging.getLogger(__name__)
_XATTR_KEYS = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")
_KINDS = (
    (tarfile.TarInfo.isdir, "dir"),
    (tarfile.TarInfo.islnk, "hardlink"),
    (tarfile.TarInfo.issym, "symlink"),
    (tarfile.TarInfo.isreg, "file"),
    (tarfile.TarInfo.isfifo, "fifo"),
    (tarfile.TarInfo.isdev, "device"),  # character and block devices (fifos matched above)
)


def write_rootfs_tar(image: SourceImage, max_bytes: int, out: BinaryIO) -> Plan:
    """Write the merged root filesystem of `image` and its runtime tree to `out` as one
    tar stream; ConversionRefused names the image and layer of anything wrong."""
    budget = ByteBudget(max_bytes)
    tree = RootfsTree(len(image.layers))
    for layer in image.layers:
        with _reading(image, layer, budget, max_bytes, drain=True) as members:
            for ordinal, member in enumerate(members):
                kind = _kind(member)
                try:
                    tree.apply(
                        layer.number - 1, ordinal, member.name, kind, member.linkname, member.size
                    )
                except EntryRefused as exc:
                    raise image.layer_error(layer, str(exc)) from None
    runtime = runtime_entries(tree, image)
    try:
        add_runtime(tree, runtime)
    except EntryRefused as exc:
        raise ConversionRefused(f"{image.describe}: cannot add the runtime tree: {exc}") from None
    plan = tree.plan()
    for path, layer_index in plan.dropped:
        log.warning(
            "%s: left out device node /%s of layer %d (%s), as an unprivileged build does",
            image.describe,
            path,
            layer_index + 1,
            image.layers[layer_index].digest,
        )
    writer = _TarWriter(out)
    for layer in image.layers:
        actions = plan.actions[layer.number - 1]
        if not actions:
            continue
        last = max(actions)
        with _reading(image, layer, ByteBudget(max_bytes), max_bytes, drain=False) as members:
            for ordinal, member in enumerate(members):
                action = actions.get(ordinal)
                if action is not None:
                    writer.copy(member, action.name, action.link_to, members)
                if ordinal == last:
                    break
    for ordinal, entry in enumerate(runtime):
        action = plan.actions[len(image.layers)].get(ordinal)
        if action is not None:
            writer.add(entry, action.name)
    for path in plan.implicit_dirs:
        writer.add(RuntimeEntry(path, "dir", 0o755), path)
    writer.close()
    return plan


def _kind(member: tarfile.TarInfo) -> str:
    for test, kind in _KINDS:
        if test(member):
            return kind
    return f"type {member.type!r}"


class _Members:
    """The members of one layer's tar stream, and the stream their content comes from."""

    def __init__(self, tar: tarfile.TarFile | None) -> None:
        self.tar = tar

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        return iter(self.tar) if self.tar is not None else iter(())

    def content(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        assert self.tar is not None
        source = self.tar.extractfile(member)
        assert source is not None
        return iter(lambda: source.read(PIECE), b"")


class _reading:
    """Open a layer for one pass; damage, bombs and bad tar data become ConversionRefused
    naming the image and the layer. Pass one drains the stream, so damage past the tar's
    end is found as well; pass two stops after the last entry it needs."""

    def __init__(
        self, image: SourceImage, layer: Layer, budget: ByteBudget, limit: int, *, drain: bool
    ) -> None:
        self.image, self.layer, self.budget, self.limit = image, layer, budget, limit
        self.drain = drain
        self.stream: LayerStream | None = None

    def __enter__(self) -> _Members:
        try:
            self.stream = LayerStream(self.layer.path, self.budget)
            tar = tarfile.open(fileobj=self.stream, mode="r|", bufsize=PIECE)  # type: ignore[call-overload]
        except tarfile.ReadError as exc:
            if str(exc) == "empty file":
                return _Members(None)  # an empty layer
            raise self._refused(exc) from None
        except (LayerDamaged, BudgetExceeded, EOFError) as exc:
            raise self._refused(exc) from None
        return _Members(tar)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        assert self.stream is not None
        try:
            if exc is None and self.drain:
                self.stream.drain()
        except (LayerDamaged, BudgetExceeded) as damage:
            raise self._refused(damage) from None
        finally:
            self.stream.close()
        if isinstance(exc, (tarfile.TarError, LayerDamaged, BudgetExceeded, EOFError)):
            raise self._refused(exc) from None

    def _refused(self, exc: BaseException) -> ConversionRefused:
        if isinstance(exc, BudgetExceeded):
            reason = (
                f"the image's layers hold more than [sif] max_rootfs_bytes = {self.limit} "
                "bytes uncompressed"
            )
        elif isinstance(exc, LayerDamaged):
            reason = str(exc)
        else:
            reason = f"not a valid tar stream ({exc or type(exc).__name__})"
        return self.image.layer_error(self.layer, reason)


class _TarWriter:
    """Writes PAX tar entries: names of any length, xattrs kept, content in pieces."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def copy(
        self, member: tarfile.TarInfo, name: str, link_to: str | None, members: _Members
    ) -> None:
        info = tarfile.TarInfo(name)
        info.mode, info.uid, info.gid = member.mode, member.uid, member.gid
        info.uname, info.gname, info.mtime = member.uname, member.gname, int(member.mtime)
        info.pax_headers = {
            k: v for k, v in member.pax_headers.items() if k.startswith(_XATTR_KEYS)
        }
        if link_to is not None:
            info.type, info.linkname = tarfile.LNKTYPE, link_to
        elif member.isreg():
            info.type, info.size = tarfile.REGTYPE, member.size
        else:
            info.type, info.linkname = member.type, member.linkname
        self._header(info)
        if info.size:
            self._content(members.content(member), info.size)

    def add(self, entry: RuntimeEntry, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.mode = entry.mode
        info.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}[
            entry.kind
        ]
        info.linkname, info.size = entry.link, len(entry.data)
        self._header(info)
        if entry.data:
            self._content(iter((entry.data,)), len(entry.data))

    def close(self) -> None:
        self.out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        self.out.flush()

    def _header(self, info: tarfile.TarInfo) -> None:
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _content(self, pieces: Iterator[bytes], size: int) -> None:
        written = 0
        for piece in pieces:
            self.out.write(piece)
            written += len(piece)
        if written != size:
            raise EOFError(f"an entry ended after {written} of {size} bytes")
        remainder = size % tarfile.BLOCKSIZE
        if remainder:
            self.out.write(b"\0" * (tarfile.BLOCKSIZE - remainder))
