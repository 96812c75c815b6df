"""Read what is inside a SIF (Singularity Image Format) file for the static catalog.

Only the 128-byte header, the descriptor table and a few small objects (definition, JSON
metadata, signature heads, squashfs superblocks) are read, by seek+read at the offsets the
header and descriptors give: nothing is executed or unpacked, so untrusted cached files are
safe to inspect. The layout and codes (format.py) are those of the reference implementation,
package `pkg/sif` of github.com/sylabs/sif (v2). Damage that stops us reading the header
or descriptor table raises SifError; damage further in (objects past EOF, bad JSON, bad
superblocks) is listed in SifInfo.problems.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import struct
import uuid
from typing import BinaryIO

from mirror.sif.dates import UTC
from mirror.sif.format import (
    ARCHES,
    COMPRESSIONS,
    DESCRIPTOR,
    FS_TYPES,
    GROUP_FLAG,
    HASH_TYPES,
    HEADER,
    MAGIC,
    MAX_TABLE_BYTES,
    PARTITION_TYPES,
    SBOM_FORMATS,
    SIGNATURE_HEAD,
    SUPERBLOCK,
    TYPE_NAMES,
)
from mirror.sif.model import (
    PartitionInfo,
    SifError,
    SifInfo,
    SifObject,
    SignatureInfo,
    SquashfsInfo,
)

_SCRIPTS = ("runscript", "startscript", "test", "helpfile")


def looks_like_sif(first_bytes: bytes) -> bool:
    """True when ``SIF_MAGIC\\0`` sits at offset 32 (right after the launch script)."""
    return bytes(first_bytes[32:42]) == MAGIC


def read_sif(path_or_file, *, max_object_bytes: int = 4 * 1024 * 1024) -> SifInfo:
    """Read a SIF from a path, a seekable binary file, or bytes already in memory.

    Objects larger than ``max_object_bytes`` are not read (a definition file is cut to it).
    Raises :class:`SifError` for bad content; OSError from opening/reading passes through.
    """
    if isinstance(path_or_file, (bytes, bytearray, memoryview)):
        path_or_file = io.BytesIO(path_or_file)
    if not isinstance(path_or_file, (str, os.PathLike)):
        return _Reader(path_or_file, max_object_bytes).read()
    with open(path_or_file, "rb") as f:
        return _Reader(f, max_object_bytes).read()


class _Reader:
    """One pass over one file: header, descriptor table, then the small objects."""

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self.f, self.limit = f, limit
        self.problems: list[str] = []
        self.file_size = f.seek(0, os.SEEK_END)

    def at(self, offset: int, n: int) -> bytes:
        self.f.seek(offset)
        return self.f.read(n)

    def read(self) -> SifInfo:
        head = self.at(0, HEADER.size)
        if len(head) < HEADER.size:
            raise SifError(f"file is {self.file_size} bytes, too short for a SIF header")
        (
            launch,
            magic,
            version,
            arch,
            image_id,
            created,
            modified,
            free,
            total,
            table_offset,
            table_size,
            data_offset,
            data_size,
        ) = HEADER.unpack(head)
        if magic != MAGIC:
            raise SifError("not a SIF file: no SIF_MAGIC at offset 32")
        if version[:2] != b"01":
            raise SifError(f"unsupported SIF version {version!r}")
        if not (
            0 <= total
            and 0 <= table_size <= MAX_TABLE_BYTES
            and table_offset >= 0
            and total * DESCRIPTOR.size <= table_size
        ):
            raise SifError(
                f"absurd descriptor table: {total} descriptors, {table_size} "
                f"bytes at offset {table_offset}"
            )
        if table_offset + table_size > self.file_size:
            raise SifError(
                f"file is truncated: the descriptor table needs {table_size} bytes "
                f"at {table_offset}, the file has {self.file_size}"
            )
        table = self.at(table_offset, total * DESCRIPTOR.size)
        entries = [e for slot in range(total) if (e := self.descriptor(table, slot))]
        if free != total - len(entries):
            self.problems.append(
                f"header says {free} free descriptors, table has {total - len(entries)}"
            )
        first: dict[object, SifObject] = {}  # first object of each type (JSON: of each name)
        for obj, _ in entries:
            first.setdefault(obj.name if obj.type_code == 0x4006 else obj.type_code, obj)
        definition = self.load(first.get(0x4001), text=True)
        metadata = self.load(first.get("inspect-metadata.json"))
        attrs = _dict(_dict(metadata).get("data")).get("attributes")
        if metadata is not None and not isinstance(attrs, dict):
            self.problems.append("inspect-metadata.json has no data.attributes object")
        attrs = _dict(attrs)
        oci_config = self.load(first.get("oci-config.json"))
        if oci_config is not None and not isinstance(oci_config, dict):
            self.problems.append("oci-config.json is not a JSON object")
            oci_config = None
        partitions = tuple(self.partition(o, x) for o, x in entries if o.type_code == 0x4004)
        primary = [p.arch for p in partitions if p.partition_type == "PrimSys"] + ["unknown"]
        return SifInfo(
            launch_script=_cstr(launch),
            version=_cstr(version),
            arch=_arch(arch) if _arch(arch) != "unknown" else primary[0],
            uuid=str(uuid.UUID(bytes=image_id)) if any(image_id) else None,
            created=_time(created),
            modified=_time(modified),
            descriptors_total=total,
            descriptors_free=free,
            data_offset=data_offset,
            data_size=data_size,
            file_size=self.file_size,
            objects=tuple(o for o, _ in entries),
            definition=definition if isinstance(definition, str) else None,
            labels=_str_map(attrs["labels"] if "labels" in attrs else self.load(first.get(0x4003))),
            environment=_str_map(attrs.get("environment")),
            **{k: v if isinstance(v := attrs.get(k), str) else None for k in _SCRIPTS},
            apps={str(k): v for k, v in _dict(attrs.get("apps")).items() if isinstance(v, dict)},
            oci_config=oci_config,
            partitions=partitions,
            signatures=tuple(self.signature(o, x) for o, x in entries if o.type_code == 0x4005),
            encrypted=any(p.fs_type in (FS_TYPES[5], FS_TYPES[6]) for p in partitions)
            or any(_i32(x, 4) == 0x200 for o, x in entries if o.type_code == 0x4008),
            sbom_formats=tuple(
                _named(SBOM_FORMATS, _i32(x, 0)) for o, x in entries if o.type_code == 0x4009
            ),
            oci_sif=0x400A in first,
            problems=tuple(self.problems),
        )

    def descriptor(self, table: bytes, slot: int) -> tuple[SifObject, bytes] | None:
        """Decode one slot (None if unused). Group and group links carry 0xF0000000."""
        (
            code,
            used,
            oid,
            group,
            link,
            offset,
            size,
            _padded,
            created,
            modified,
            _uid,
            _gid,
            name,
            extra,
        ) = DESCRIPTOR.unpack_from(table, slot * DESCRIPTOR.size)
        if not used:
            return None
        link_id = link & ~GROUP_FLAG
        link_text = f"group {link_id}" if link & GROUP_FLAG else f"object {link}"
        obj = SifObject(
            oid,
            group & ~GROUP_FLAG or None,
            link_text if link_id else None,
            code,
            TYPE_NAMES.get(code, f"unknown 0x{code & 0xFFFFFFFF:04X}"),
            _cstr(name),
            offset,
            size,
            _time(created),
            _time(modified),
        )
        if offset < 0 or size < 0:
            self.problems.append(f"object {oid} has a negative offset or size")
        elif offset + size > self.file_size:
            self.problems.append(f"object {oid} extends past the end of the file")
        return obj, extra

    def readable(self, obj: SifObject) -> bool:
        return 0 <= obj.offset and 0 <= obj.size and obj.offset + obj.size <= self.file_size

    def load(self, obj: SifObject | None, text: bool = False) -> object | None:
        """A small object as text (cut to the limit) or as parsed JSON (None when too big or
        malformed). Either shortfall is recorded as a problem."""
        if obj is None or not self.readable(obj):
            return None
        label = obj.name or ("definition file" if text else f"object {obj.id}")
        if obj.size > self.limit:
            self.problems.append(
                f"{label} is larger than {self.limit} bytes; " + ("cut" if text else "not read")
            )
            if not text:
                return None
        data = self.at(obj.offset, min(obj.size, self.limit))
        if text:
            return data.decode("utf-8", "replace")
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            self.problems.append(f"{label} is not valid JSON")
            return None

    def partition(self, obj: SifObject, extra: bytes) -> PartitionInfo:
        squashfs = self.superblock(obj) if _i32(extra, 0) == 1 else None
        return PartitionInfo(
            obj.id,
            _named(FS_TYPES, _i32(extra, 0)),
            _named(PARTITION_TYPES, _i32(extra, 4)),
            _arch(extra[8:11]),
            obj.size,
            squashfs,
        )

    def superblock(self, obj: SifObject) -> SquashfsInfo | None:
        """The 96-byte squashfs superblock at the partition start. It needs only those
        bytes, so a partition cut short by truncation still shows it."""
        if obj.offset < 0 or obj.size < 96 or obj.offset + 96 > self.file_size:
            return None
        raw = self.at(obj.offset, 96)
        (
            magic,
            inodes,
            mkfs_time,
            block_size,
            _fragments,
            compression,
            _block_log,
            _flags,
            _ids,
            major,
            minor,
        ) = SUPERBLOCK.unpack_from(raw)
        if magic != b"hsqs":
            self.problems.append(f"object {obj.id} is not a squashfs image (no hsqs magic)")
            return None
        return SquashfsInfo(
            _named(COMPRESSIONS, compression),
            block_size,
            inodes,
            _time(mkfs_time),
            f"{major}.{minor}",
            struct.unpack_from("<Q", raw, 40)[0],
        )

    def signature(self, obj: SifObject, extra: bytes) -> SignatureInfo:
        """Kind from the first bytes only: PGP clear-signed text or a DSSE JSON envelope."""
        head = b""
        if self.readable(obj):
            head = self.at(obj.offset, min(obj.size, SIGNATURE_HEAD)).lstrip()
        kind = (
            "PGP"
            if head.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
            else "DSSE"
            if head.startswith(b"{") and b'"payload' in head
            else "unknown"
        )
        entity = extra[4:24]
        return SignatureInfo(
            obj.id,
            kind,
            _named(HASH_TYPES, _i32(extra, 0)),
            entity.hex().upper() if any(entity) else None,
            obj.link,
            obj.group is not None or obj.name == "part-signature",
        )


def _time(seconds: int) -> dt.datetime | None:
    """Unix seconds to UTC; None for unset (Go zero time, any value <= 0) or absurd values."""
    try:
        return dt.datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None
    except (OverflowError, OSError, ValueError):
        return None


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _named(table: dict[int, str], code: int) -> str:
    return table.get(code, f"unknown ({code})")


def _arch(raw: bytes) -> str:
    code = raw[:2]
    return ARCHES[int(code)] if code.isdigit() and int(code) < len(ARCHES) else "unknown"


def _i32(extra: bytes, offset: int) -> int:
    return struct.unpack_from("<i", extra, offset)[0]


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _str_map(value: object) -> dict[str, str]:
    """A JSON object as str -> str (non-string values become their JSON text)."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in _dict(value).items()}
