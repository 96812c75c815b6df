"""Write the SIF around a squashfs: the header, the descriptor table and the small objects
before it, laid out as the reference implementation (github.com/sylabs/sif, pkg/sif v2)
lays out a deterministic image: 48 descriptor slots at offset 4096, objects one after the
other from the end of the table, the partition aligned to 4096, every time the Go zero
time. Only bytes are made here; the caller puts the partition after them."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from mirror.sif.format import ARCHES, DESCRIPTOR, GROUP_FLAG, HEADER, MAGIC

LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
GO_ZERO_TIME = -62135596800  # what deterministic builds store as every time
DEFINITION_FILE, PARTITION, GENERIC_JSON = 0x4001, 0x4004, 0x4006
FS_SQUASHFS, PARTITION_PRIMARY_SYSTEM = 1, 2
_CAPACITY = 48
_DESCRIPTORS_OFFSET = 4096
_ALIGNMENT = 4096
_PARTITION_EXTRA = struct.Struct("<ii3s")  # fs type, partition type, arch code


@dataclass(frozen=True, slots=True)
class SifObject:
    """A small data object stored before the partition."""

    data_type: int
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SifLayout:
    """Everything before the partition (`prefix`, zero-padded up to `partition_offset`)."""

    prefix: bytes
    partition_offset: int


def arch_code(arch: str) -> bytes:
    """The 3-byte SIF code of a Go architecture name; `00` when SIF has none for it."""
    number = ARCHES.index(arch) if arch in ARCHES else 0
    return f"{number:02d}".encode() + b"\0"


def sif_prefix(
    objects: list[SifObject], partition_size: int, arch: str, image_id: uuid.UUID
) -> SifLayout:
    """The bytes of a SIF holding `objects` (group 1, in order) then a squashfs primary
    system partition of `partition_size` bytes for `arch`."""
    data_offset = _DESCRIPTORS_OFFSET + _CAPACITY * DESCRIPTOR.size
    descriptors = []
    body = bytearray()
    for number, item in enumerate(objects, start=1):
        offset = data_offset + len(body)
        descriptors.append(
            _descriptor(number, item.data_type, item.name, offset, len(item.data), 0, b"")
        )
        body += item.data
    end = data_offset + len(body)
    partition_offset = -(-end // _ALIGNMENT) * _ALIGNMENT
    code = arch_code(arch)
    extra = _PARTITION_EXTRA.pack(FS_SQUASHFS, PARTITION_PRIMARY_SYSTEM, code)
    descriptors.append(
        _descriptor(
            len(objects) + 1,
            PARTITION,
            "",
            partition_offset,
            partition_size,
            partition_offset - end,
            extra,
        )
    )
    header = HEADER.pack(
        LAUNCH_SCRIPT,
        MAGIC,
        b"01\0",
        code,
        image_id.bytes,
        GO_ZERO_TIME,
        GO_ZERO_TIME,
        _CAPACITY - len(descriptors),
        _CAPACITY,
        _DESCRIPTORS_OFFSET,
        _CAPACITY * DESCRIPTOR.size,
        data_offset,
        partition_offset + partition_size - data_offset,
    )
    table = b"".join(descriptors).ljust(_CAPACITY * DESCRIPTOR.size, b"\0")
    prefix = header.ljust(_DESCRIPTORS_OFFSET, b"\0") + table + bytes(body)
    return SifLayout(prefix.ljust(partition_offset, b"\0"), partition_offset)


def _descriptor(
    number: int, data_type: int, name: str, offset: int, size: int, gap: int, extra: bytes
) -> bytes:
    return DESCRIPTOR.pack(
        data_type,
        True,
        number,
        GROUP_FLAG | 1,
        0,
        offset,
        size,
        size + gap,
        GO_ZERO_TIME,
        GO_ZERO_TIME,
        0,
        0,
        name.encode(),
        extra,
    )
