"""The SIF binary layout and its code tables, as the reference implementation defines
them (package `pkg/sif` of github.com/sylabs/sif, v2): header and descriptor structs,
data-object types and their extra fields, architectures; plus the squashfs superblock
(Linux: fs/squashfs/squashfs_fs.h)."""

from __future__ import annotations

import struct

HEADER = struct.Struct("<32s10s3s3s16s8q")  # launch, magic, version, arch, uuid, 8 x int64
DESCRIPTOR = struct.Struct("<i?III7q128s384s")  # type, used, id, group, link, 7 x int64, ...
# The squashfs superblock up to its minor version.
SUPERBLOCK = struct.Struct("<4sIIIIHHHHHH")
MAGIC = b"SIF_MAGIC\0"
GROUP_FLAG = 0xF0000000
MAX_TABLE_BYTES = 64 << 20
SIGNATURE_HEAD = 512  # enough to tell a PGP clear-signed message from a DSSE envelope

TYPE_NAMES = {
    0x4001: "Def.FILE",
    0x4002: "Env.Vars",
    0x4003: "JSON.Labels",
    0x4004: "FS",
    0x4005: "Signature",
    0x4006: "JSON.Generic",
    0x4007: "Generic/Raw",
    0x4008: "Cryptographic Message",
    0x4009: "SBOM",
    0x400A: "OCI.RootIndex",
    0x400B: "OCI.Blob",
}
FS_TYPES = {
    1: "Squashfs",
    2: "Ext3",
    3: "Archive",
    4: "Raw",
    5: "Encrypted squashfs",
    6: "Gocryptfs squashfs",
}
PARTITION_TYPES = {1: "System", 2: "PrimSys", 3: "Data", 4: "Overlay"}
HASH_TYPES = {1: "SHA256", 2: "SHA384", 3: "SHA512", 4: "BLAKE2s", 5: "BLAKE2b"}
SBOM_FORMATS = {
    1: "cyclonedx-json",
    2: "cyclonedx-xml",
    3: "github-json",
    4: "spdx-json",
    5: "spdx-rdf",
    6: "spdx-tag-value",
    7: "spdx-yaml",
    8: "syft-json",
}
ARCHES = (
    "unknown",
    "386",
    "amd64",
    "arm",
    "arm64",
    "ppc64",
    "ppc64le",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "s390x",
    "riscv64",
    "loong64",
)  # index = the 2-digit code
COMPRESSIONS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
