"""Write Singularity Image Format (SIF) files for tests, following the SIF layout notes
(the SIF format of github.com/sylabs/sif, pkg/sif).

Why a writer of our own: the proxy and the catalog must handle SIF artifacts pushed by
Apptainer/SingularityCE, but no such tool is available here, and committing third-party
test images is not allowed. Files built here are structurally valid (header, descriptor
table, data objects, 4096-aligned partitions, real squashfs from ``mksquashfs``), and the
knobs cover the variants readers meet in the wild: the legacy data offset 32768,
deterministic (Go zero) timestamps, missing partitions, and truncated files.

Layout in brief: a 128-byte global header at offset 0, ``capacity`` descriptors of 585
bytes each at ``descriptors_offset``, then the objects' data from ``data_offset`` on.
All integers are little-endian and structures packed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
import subprocess
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import ClassVar, Sequence

# --- format constants (section B1/B2) -----------------------------------------------------

SIF_MAGIC = b"SIF_MAGIC\0"
SIF_VERSION = b"01\0"
HEADER_FORMAT = "<32s10s3s3s16s8q"  # launch, magic, version, arch, uuid, 8 x int64
DESCRIPTOR_FORMAT = "<i?III7q128s384s"  # type, used, id, group, link, 7 x int64, name, extra
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)
DESCRIPTOR_SIZE = struct.calcsize(DESCRIPTOR_FORMAT)
NAME_SIZE = 128
EXTRA_SIZE = 384

DEFAULT_LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
DEFAULT_CAPACITY = 48
DEFAULT_DESCRIPTORS_OFFSET = 4096
LEGACY_DATA_OFFSET = 32768
PARTITION_ALIGNMENT = 4096
GROUP_FLAG = 0xF0000000
GO_ZERO_TIME = -62135596800
"""Go's zero ``time.Time`` in Unix seconds: what reproducible builds store as times."""

assert HEADER_SIZE == 128 and DESCRIPTOR_SIZE == 585


# --- code tables (section B3) -------------------------------------------------------------


class DataType(IntEnum):
    DEFINITION_FILE = 0x4001
    ENV_VARS = 0x4002
    LABELS = 0x4003
    PARTITION = 0x4004
    SIGNATURE = 0x4005
    GENERIC_JSON = 0x4006
    GENERIC_RAW = 0x4007
    CRYPTO_MESSAGE = 0x4008
    SBOM = 0x4009
    OCI_ROOT_INDEX = 0x400A
    OCI_BLOB = 0x400B


class FsType(IntEnum):
    SQUASHFS = 1
    EXT3 = 2
    IMMUTABLE_OBJECT = 3
    RAW = 4
    ENCRYPTED_SQUASHFS = 5


class PartitionType(IntEnum):
    SYSTEM = 1
    PRIMSYS = 2
    DATA = 3
    OVERLAY = 4


class HashType(IntEnum):
    SHA256 = 1
    SHA384 = 2
    SHA512 = 3
    BLAKE2S = 4
    BLAKE2B = 5


class CryptoFormat(IntEnum):
    OPENPGP = 1
    PEM = 2


class CryptoMessageType(IntEnum):
    CLEAR_SIGNATURE = 0x100
    RSA_OAEP = 0x200


class SbomFormat(IntEnum):
    CYCLONEDX_JSON = 1
    CYCLONEDX_XML = 2
    GITHUB_JSON = 3
    SPDX_JSON = 4
    SPDX_RDF = 5
    SPDX_TAG_VALUE = 6
    SPDX_YAML = 7
    SYFT_JSON = 8


ARCH_CODES = {
    "unknown": "00", "386": "01", "amd64": "02", "arm": "03", "arm64": "04",
    "ppc64": "05", "ppc64le": "06", "mips": "07", "mipsle": "08", "mips64": "09",
    "mips64le": "10", "s390x": "11", "riscv64": "12", "loong64": "13",
}  # fmt: skip


def arch_field(code: str) -> bytes:
    """The 3-byte arch field: two ASCII digits and a NUL."""
    if len(code) != 2 or not code.isdigit():
        raise ValueError(f"arch code must be two digits, got {code!r}")
    return code.encode("ascii") + b"\0"


# --- data objects -------------------------------------------------------------------------


@dataclass(kw_only=True)
class SifObject:
    """One data object plus what its descriptor says about it.

    ``group`` is the group number (``None`` = no group); ``link_object`` links to an
    object ID, ``link_group`` to a group (at most one of them). Subclasses fix the data
    type and supply the type-specific ``extra`` bytes.
    """

    data: bytes
    name: str = ""
    group: int | None = 1
    link_object: int | None = None
    link_group: int | None = None

    data_type: ClassVar[DataType] = DataType.GENERIC_RAW
    alignment: ClassVar[int] = 1

    def extra(self) -> bytes:
        return b""

    def group_field(self) -> int:
        return GROUP_FLAG | (self.group or 0)

    def link_field(self) -> int:
        if self.link_object is not None and self.link_group is not None:
            raise ValueError("an object links to an object or to a group, not both")
        if self.link_group is not None:
            return GROUP_FLAG | self.link_group
        return self.link_object or 0


@dataclass(kw_only=True)
class DefinitionFile(SifObject):
    """The raw text of the build recipe (``Def.FILE``)."""

    data_type: ClassVar[DataType] = DataType.DEFINITION_FILE


@dataclass(kw_only=True)
class GenericJSON(SifObject):
    """A named JSON document such as ``inspect-metadata.json`` (``JSON.Generic``)."""

    data_type: ClassVar[DataType] = DataType.GENERIC_JSON


@dataclass(kw_only=True)
class Partition(SifObject):
    """A file-system partition; aligned to 4096 bytes like the Go library does."""

    fs_type: FsType = FsType.SQUASHFS
    part_type: PartitionType = PartitionType.PRIMSYS
    arch: str = ARCH_CODES["amd64"]

    data_type: ClassVar[DataType] = DataType.PARTITION
    alignment: ClassVar[int] = PARTITION_ALIGNMENT

    def extra(self) -> bytes:
        return struct.pack("<ii3s", self.fs_type, self.part_type, arch_field(self.arch))


@dataclass(kw_only=True)
class Signature(SifObject):
    """A signature object. Current format: no group, linked to the signed group."""

    hash_type: HashType = HashType.SHA256
    fingerprint: bytes = bytes(20)
    group: int | None = None
    link_group: int | None = 1

    data_type: ClassVar[DataType] = DataType.SIGNATURE

    def extra(self) -> bytes:
        if len(self.fingerprint) > 256:
            raise ValueError("signature entity is at most 256 bytes")
        return struct.pack("<i256s", self.hash_type, self.fingerprint)


@dataclass(kw_only=True)
class Sbom(SifObject):
    """A software bill of materials."""

    sbom_format: SbomFormat = SbomFormat.SPDX_JSON

    data_type: ClassVar[DataType] = DataType.SBOM

    def extra(self) -> bytes:
        return struct.pack("<i", self.sbom_format)


@dataclass(kw_only=True)
class CryptoMessage(SifObject):
    """A cryptographic message, e.g. the wrapped key of an encrypted partition."""

    crypto_format: CryptoFormat = CryptoFormat.PEM
    message_type: CryptoMessageType = CryptoMessageType.RSA_OAEP

    data_type: ClassVar[DataType] = DataType.CRYPTO_MESSAGE

    def extra(self) -> bytes:
        return struct.pack("<ii", self.crypto_format, self.message_type)


# --- writer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where an object's data landed in the file."""

    offset: int
    size: int
    size_with_padding: int


def _padded(value: bytes, size: int, what: str) -> bytes:
    if len(value) > size:
        raise ValueError(f"{what} is {len(value)} bytes, at most {size} allowed")
    return value.ljust(size, b"\0")


def layout(objects: Sequence[SifObject], data_offset: int) -> tuple[list[Placement], int]:
    """Place objects one after the other from ``data_offset``, aligning those that ask.

    Returns the placements and the end offset of the last object.
    """
    placements = []
    cursor = data_offset
    for obj in objects:
        start = -(-cursor // obj.alignment) * obj.alignment
        placements.append(Placement(start, len(obj.data), len(obj.data) + start - cursor))
        cursor = start + len(obj.data)
    return placements, cursor


def primary_arch(objects: Sequence[SifObject]) -> str:
    """The arch code of the first PrimSys partition, ``00`` if there is none."""
    for obj in objects:
        if isinstance(obj, Partition) and obj.part_type == PartitionType.PRIMSYS:
            return obj.arch
    return ARCH_CODES["unknown"]


def build_sif(
    objects: Sequence[SifObject],
    *,
    arch: str | None = None,
    created: int = GO_ZERO_TIME,
    modified: int | None = None,
    uuid_bytes: bytes = bytes(16),
    launch_script: bytes = DEFAULT_LAUNCH_SCRIPT,
    descriptors_capacity: int = DEFAULT_CAPACITY,
    descriptors_offset: int = DEFAULT_DESCRIPTORS_OFFSET,
    data_offset: int | None = None,
    truncate_to: int | None = None,
) -> bytes:
    """Return the bytes of a SIF holding ``objects`` in descriptor slots 1..n.

    ``arch``: header arch code; by default the PrimSys partition's (``00`` without one).
    ``created``/``modified``: Unix seconds for the header and every descriptor;
    the default is the Go zero time of reproducible builds. ``data_offset``: defaults to
    the end of the descriptor table; pass :data:`LEGACY_DATA_OFFSET` for old-style files.
    ``truncate_to``: cut the result to that many bytes (for reader robustness tests).
    """
    if len(objects) > descriptors_capacity:
        raise ValueError(f"{len(objects)} objects do not fit {descriptors_capacity} slots")
    if len(launch_script) >= 32:
        raise ValueError("launch script must be shorter than 32 bytes")
    modified = created if modified is None else modified
    descriptors_size = descriptors_capacity * DESCRIPTOR_SIZE
    table_end = descriptors_offset + descriptors_size
    data_offset = table_end if data_offset is None else data_offset
    if descriptors_offset < HEADER_SIZE or data_offset < table_end:
        raise ValueError("header, descriptor table and data must not overlap")

    placements, end = layout(objects, data_offset)
    header = struct.pack(
        HEADER_FORMAT,
        _padded(launch_script, 32, "launch script"),
        SIF_MAGIC,
        SIF_VERSION,
        arch_field(arch if arch is not None else primary_arch(objects)),
        _padded(uuid_bytes, 16, "uuid"),
        created,
        modified,
        descriptors_capacity - len(objects),
        descriptors_capacity,
        descriptors_offset,
        descriptors_size,
        data_offset,
        end - data_offset,
    )
    table = bytearray(descriptors_size)
    for slot, (obj, place) in enumerate(zip(objects, placements)):
        struct.pack_into(
            DESCRIPTOR_FORMAT,
            table,
            slot * DESCRIPTOR_SIZE,
            obj.data_type,
            True,
            slot + 1,
            obj.group_field(),
            obj.link_field(),
            place.offset,
            place.size,
            place.size_with_padding,
            created,
            modified,
            0,
            0,
            _padded(obj.name.encode("utf-8"), NAME_SIZE, "object name"),
            _padded(obj.extra(), EXTRA_SIZE, "extra"),
        )

    image = bytearray(end)
    image[:HEADER_SIZE] = header
    image[descriptors_offset:table_end] = table
    for obj, place in zip(objects, placements):
        image[place.offset : place.offset + place.size] = obj.data
    return bytes(image if truncate_to is None else image[:truncate_to])


# --- content helpers ----------------------------------------------------------------------


def make_squashfs(tmpdir: str | Path, files: dict[str, bytes] | None = None) -> bytes:
    """Build a small, reproducible squashfs image with ``mksquashfs`` and return it.

    ``files`` maps relative paths to contents; the default is a minimal container tree
    (labels file, runscript, one binary-ish file). Timestamps and owners are fixed so the
    same input always gives the same bytes.
    """
    tmpdir = Path(tmpdir)
    root = tmpdir / "squashfs-root"
    output = tmpdir / "rootfs.sqfs"
    for rel_path, content in (files or _default_rootfs()).items():
        target = root / rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    subprocess.run(
        [
            "mksquashfs", str(root), str(output),
            "-noappend", "-quiet", "-no-progress", "-processors", "1",
            "-all-root", "-mkfs-time", "0", "-all-time", "0",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    return output.read_bytes()


def _default_rootfs() -> dict[str, bytes]:
    return {
        ".singularity.d/labels.json": b'{"org.label-schema.schema-version":"1.0"}\n',
        ".singularity.d/runscript": b'#!/bin/sh\nexec /opt/tool/bin/tool "$@"\n',
        "opt/tool/bin/tool": b"#!/bin/sh\necho hpc-mirror test tool\n",
        "etc/os-release": b'NAME="hpc-mirror test rootfs"\n',
    }


def _date_labels(created: int) -> dict[str, str]:
    """The build-date labels Apptainer writes; none for unset (zero) times."""
    if created <= 0:
        return {}
    when = dt.datetime.fromtimestamp(created, dt.timezone.utc)
    # label-schema's odd format: Weekday_day_Month_year_h:m:s_UTC, fields unpadded
    build_date = (
        f"{when:%A}_{when.day}_{when:%B}_{when.year}_{when.hour}:{when.minute}:{when.second}_UTC"
    )
    return {
        "org.label-schema.build-date": build_date,
        "org.opencontainers.image.created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def pgp_like_signature(signed_text: str) -> bytes:
    """A clear-signed-looking message (not a real signature: nothing verifies it)."""
    fake = hashlib.sha512(signed_text.encode()).digest()
    body = base64.b64encode(fake * 2).decode()
    return (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
        f"{signed_text}\n-----BEGIN PGP SIGNATURE-----\n\n{body}\n"
        "-----END PGP SIGNATURE-----\n"
    ).encode()


@dataclass
class ExampleSif:
    """The parts :func:`example_sif` put into the file, for assertions in tests."""

    data: bytes
    definition: str
    labels: dict[str, str]
    fingerprint: bytes
    squashfs: bytes
    objects: list[SifObject] = field(default_factory=list)


def example_sif(
    squashfs: bytes,
    *,
    name: str = "tool",
    version: str = "1.0",
    arch: str = "amd64",
    created: int = 1_700_000_000,
    signed: bool = True,
    data_offset: int | None = None,
) -> ExampleSif:
    """The standard test SIF: definition file, ``inspect-metadata.json`` with labels, a
    squashfs PrimSys partition and (if ``signed``) a PGP-looking signature object.

    ``squashfs`` comes from :func:`make_squashfs` (built once, reused across SIFs);
    ``name``/``version`` vary the text so each call can give a different digest.
    """
    definition = (
        "Bootstrap: docker\nFrom: alpine:3.20\n\n"
        f"%labels\n    Name {name}\n    Version {version}\n\n"
        f'%runscript\n    exec /opt/tool/bin/tool "$@"\n'
    )
    labels = {
        "Name": name,
        "Version": version,
        "org.label-schema.schema-version": "1.0",
        "org.label-schema.build-arch": arch,
        "org.label-schema.usage.apptainer.version": "1.3.1",
        "org.label-schema.usage.singularity.deffile.bootstrap": "docker",
        "org.label-schema.usage.singularity.deffile.from": "alpine:3.20",
        "org.opencontainers.image.title": f"{name} & friends <test>",
        **_date_labels(created),
    }
    metadata = {
        "data": {
            "attributes": {
                "labels": labels,
                "deffile": definition,
                "runscript": '#!/bin/sh\nexec /opt/tool/bin/tool "$@"\n',
                "environment": {"90-environment.sh": "export TOOL_HOME=/opt/tool\n"},
            }
        },
        "type": "container",
    }
    fingerprint = hashlib.sha1(f"{name}:{version}".encode()).digest()
    objects: list[SifObject] = [
        DefinitionFile(data=definition.encode()),
        GenericJSON(name="inspect-metadata.json", data=json.dumps(metadata).encode()),
        Partition(data=squashfs, arch=ARCH_CODES[arch]),
    ]
    if signed:
        objects.append(
            Signature(
                data=pgp_like_signature(json.dumps({"name": name, "version": version})),
                fingerprint=fingerprint,
            )
        )
    image = build_sif(
        objects,
        created=created,
        uuid_bytes=hashlib.md5(f"{name}:{version}".encode()).digest(),
        data_offset=data_offset,
    )
    return ExampleSif(image, definition, labels, fingerprint, squashfs, objects)
