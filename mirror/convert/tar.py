"""Reading and writing tar streams, entry by entry, content in pieces.

Why not `tarfile`: in stream mode it copies its whole read buffer for every 512-byte
header (4x the converter's own work on an image of 80,000 files), keeps every member it
has read in a list, and takes an invalid header after the first for the end of the
archive, silently dropping the rest of a damaged layer. Read here: POSIX ustar with PAX
extended headers (path, linkpath, size, uid, gid, mtime, xattrs) and GNU long names and
base-256 numbers, as Docker, buildah, containerd, Go's archive/tar and GNU tar write them;
written: ustar with a PAX header where a field does not fit, and for xattrs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

BLOCK = 512
_KINDS = {
    b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
    b"3": "device", b"4": "device", b"5": "dir", b"6": "fifo",
}  # fmt: skip
_TYPEFLAGS = {"file": b"0", "hardlink": b"1", "symlink": b"2", "dir": b"5", "fifo": b"6"}
_XATTR_PREFIXES = (b"SCHILY.xattr.", b"LIBARCHIVE.xattr.")
_MAX_OCTAL = {8: 0o7777777, 12: 0o77777777777}
_MAX_META = 1 << 20  # largest PAX header or GNU long name accepted


class TarDamaged(Exception):
    """Not a valid tar stream: the message says where and why."""


class Source(Protocol):
    def read(self, size: int = -1) -> bytes: ...


@dataclass(slots=True)
class TarEntry:
    """One entry's header: `kind` is file, dir, symlink, hardlink, fifo or device;
    `link` a symlink's target or a hard link's target name."""

    name: str
    kind: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    link: str = ""
    uname: str = ""
    gname: str = ""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)  # PAX key -> raw value


class TarReader:
    """The entries of a tar stream in order. The content of the entry last yielded may be
    read with `content()`; whatever is not read is skipped before the next entry."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._buffer = bytearray()
        self._offset = 0  # of the next byte the caller gets
        self._unread = 0  # content bytes (and padding) of the current entry not consumed
        self._content_left = 0

    def __iter__(self) -> Iterator[TarEntry]:
        pax: dict[bytes, bytes] = {}
        long_name = long_link = None
        while True:
            self._skip(self._unread)
            self._unread = self._content_left = 0
            header = self._take(BLOCK, at_header=True)
            if header is None or not any(header):
                return  # end of archive (a zero block, or the stream simply ends)
            start = self._offset - BLOCK
            entry, typeflag = _parse_header(header, start)
            if typeflag in (b"x", b"g", b"L", b"K"):
                data = self._metadata(entry.size, start)
                if typeflag == b"x":
                    pax.update(_pax_records(data, start))
                elif typeflag == b"L":
                    long_name = _text(data.rstrip(b"\0"))
                elif typeflag == b"K":
                    long_link = _text(data.rstrip(b"\0"))
                continue  # a global PAX header ("g"): no image tool writes one that matters
            if typeflag not in _KINDS:
                raise TarDamaged(
                    f"entry {entry.name!r} at byte {start}: unsupported type {typeflag!r}"
                )
            entry.kind = _KINDS[typeflag]
            if typeflag == b"\0" and entry.name.endswith("/"):
                entry.kind = "dir"
            _apply(entry, pax, long_name, long_link, start)
            if entry.kind != "file":
                entry.size = 0  # header-only types carry no content, whatever size says
            pax, long_name, long_link = {}, None, None
            self._content_left = entry.size
            self._unread = _padded(entry.size)
            yield entry

    def content(self, piece: int = 1 << 20) -> Iterator[bytes]:
        """The current entry's content, in pieces of at most `piece` bytes."""
        while self._content_left:
            if self._buffer:
                count = min(len(self._buffer), self._content_left)
                data = bytes(self._buffer[:count])
                del self._buffer[:count]
            else:
                data = self._source.read(min(piece, self._content_left))
                if not data:
                    raise TarDamaged(f"the stream ends inside an entry, at byte {self._offset}")
            self._offset += len(data)
            self._content_left -= len(data)
            self._unread -= len(data)
            yield data

    def finish(self) -> None:
        """Read the stream to its end: only zero bytes may follow the end of the archive."""
        if any(self._buffer):
            raise TarDamaged(f"data after the end of the archive, at byte {self._offset}")
        self._offset += len(self._buffer)
        self._buffer.clear()
        while data := self._source.read(1 << 20):
            if any(data):
                raise TarDamaged(f"data after the end of the archive, near byte {self._offset}")
            self._offset += len(data)

    def _metadata(self, size: int, start: int) -> bytes:
        if size > _MAX_META:
            raise TarDamaged(f"a {size}-byte extended header at byte {start}")
        data = self._take(size) if size else b""
        assert data is not None
        self._skip(_padded(size) - size)
        return data

    def _take(self, count: int, at_header: bool = False) -> bytes | None:
        while len(self._buffer) < count:
            more = self._source.read(max(count - len(self._buffer), 1 << 16))
            if not more:
                if at_header and not self._buffer:
                    return None
                end = self._offset + len(self._buffer)
                raise TarDamaged(f"the stream ends inside an entry, at byte {end}")
            self._buffer += more
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._offset += count
        return data

    def _skip(self, count: int) -> None:
        while count:
            if not self._buffer:
                more = self._source.read(min(count, 1 << 20))
                if not more:
                    raise TarDamaged(f"the stream ends inside an entry, at byte {self._offset}")
                self._buffer += more
            step = min(count, len(self._buffer))
            del self._buffer[:step]
            self._offset += step
            count -= step


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _field(header: bytes, start: int, end: int) -> bytes:
    return header[start:end].split(b"\0", 1)[0]


def _number(raw: bytes, what: str, offset: int) -> int:
    if raw and raw[0] & 0x80:  # GNU base-256: big-endian two's complement
        value = int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
        return value - (1 << (8 * len(raw) - 1)) if raw[0] & 0x40 else value
    text = raw.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarDamaged(f"header at byte {offset}: {what} is not a number") from None


def _parse_header(header: bytes, offset: int) -> tuple[TarEntry, bytes]:
    checksum = _number(header[148:156], "checksum", offset)
    if checksum != sum(header) - sum(header[148:156]) + 256:  # the field counts as spaces
        raise TarDamaged(f"invalid header at byte {offset} (checksum)")
    name = _field(header, 0, 100)
    if header[257:263] == b"ustar\0":  # POSIX: names up to 255 bytes with the prefix
        prefix = _field(header, 345, 500)
        if prefix:
            name = prefix + b"/" + name
    entry = TarEntry(
        name=_text(name),
        kind="",
        mode=_number(header[100:108], "mode", offset) & 0o7777,
        uid=_number(header[108:116], "uid", offset),
        gid=_number(header[116:124], "gid", offset),
        size=_number(header[124:136], "size", offset),
        mtime=_number(header[136:148], "mtime", offset),
        link=_text(_field(header, 157, 257)),
        uname=_text(_field(header, 265, 297)),
        gname=_text(_field(header, 297, 329)),
    )
    if entry.size < 0:
        raise TarDamaged(f"header at byte {offset}: negative size")
    return entry, header[156:157]


def _pax_records(data: bytes, offset: int) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        try:
            length = int(data[position:space])
        except ValueError:
            raise TarDamaged(f"bad PAX record in the header at byte {offset}") from None
        record = data[space + 1 : position + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarDamaged(f"bad PAX record in the header at byte {offset}")
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        position += length
    return records


def _apply(
    entry: TarEntry,
    pax: dict[bytes, bytes],
    long_name: str | None,
    long_link: str | None,
    offset: int,
) -> None:
    """PAX records and GNU long names override the ustar fields."""
    if long_name is not None:
        entry.name = long_name
    if long_link is not None:
        entry.link = long_link
    for key, value in pax.items():
        if key == b"path":
            entry.name = _text(value)
        elif key == b"linkpath":
            entry.link = _text(value)
        elif key in (b"size", b"uid", b"gid", b"mtime"):
            try:
                number = int(float(value)) if key == b"mtime" else int(value)
            except ValueError:
                raise TarDamaged(f"PAX {key.decode()} of the entry at byte {offset}") from None
            setattr(entry, key.decode(), number)
        elif key in (b"uname", b"gname"):
            setattr(entry, key.decode(), _text(value))
        elif key.startswith(_XATTR_PREFIXES):
            entry.xattrs[key] = value


class TarWriter:
    """Writes entries to a binary stream."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def entry(self, entry: TarEntry, content: Iterable[bytes] = ()) -> None:
        self._out.write(header_bytes(entry))
        written = 0
        for piece in content:
            self._out.write(piece)
            written += len(piece)
        if written != entry.size:
            raise TarDamaged(f"{entry.name!r}: {written} of {entry.size} content bytes")
        if entry.size % BLOCK:
            self._out.write(bytes(BLOCK - entry.size % BLOCK))

    def close(self) -> None:
        self._out.write(bytes(2 * BLOCK))
        self._out.flush()


def header_bytes(entry: TarEntry) -> bytes:
    """The ustar header of `entry`, after a PAX header for what ustar cannot hold."""
    name = entry.name.encode("utf-8", "surrogateescape")
    if entry.kind == "dir" and not name.endswith(b"/"):
        name += b"/"
    link = entry.link.encode("utf-8", "surrogateescape")
    mtime = max(0, entry.mtime)
    records: list[tuple[bytes, bytes]] = []
    if len(name) > 100:
        records.append((b"path", name))
    if len(link) > 100:
        records.append((b"linkpath", link))
    for key, value, width in (
        (b"uid", entry.uid, 8), (b"gid", entry.gid, 8), (b"size", entry.size, 12),
        (b"mtime", mtime, 12),
    ):  # fmt: skip
        if not 0 <= value <= _MAX_OCTAL[width]:
            records.append((key, str(value).encode()))
    records += sorted(entry.xattrs.items())
    pax = b""
    if records:
        body = b"".join(_pax_record(key, value) for key, value in records)
        pax_entry = TarEntry("././@PaxHeader", "file", size=len(body))
        pax = _ustar(pax_entry, b"././@PaxHeader", b"", b"x", 0) + body
        pax += bytes(_padded(len(body)) - len(body))
    return pax + _ustar(entry, name[:100], link[:100], _TYPEFLAGS[entry.kind], mtime)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _octal(value: int, width: int) -> bytes:
    value = value if 0 <= value <= _MAX_OCTAL[width] else 0
    return b"%0*o\0" % (width - 1, value)


def _ustar(entry: TarEntry, name: bytes, link: bytes, typeflag: bytes, mtime: int) -> bytes:
    uname = entry.uname.encode("utf-8", "surrogateescape")
    gname = entry.gname.encode("utf-8", "surrogateescape")
    header = bytearray(BLOCK)
    header[0:100] = name.ljust(100, b"\0")
    header[100:108] = _octal(entry.mode & 0o7777, 8)
    header[108:116] = _octal(entry.uid, 8)
    header[116:124] = _octal(entry.gid, 8)
    header[124:136] = _octal(entry.size, 12)
    header[136:148] = _octal(mtime, 12)
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[157:257] = link.ljust(100, b"\0")
    header[257:265] = b"ustar\x0000"
    header[265:297] = (uname if len(uname) <= 32 else b"").ljust(32, b"\0")
    header[297:329] = (gname if len(gname) <= 32 else b"").ljust(32, b"\0")
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)
