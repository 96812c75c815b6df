"""What the SIF reader finds: typed, frozen records of a SIF's header, objects, partitions
and signatures."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mirror.sif.dates import parse_build_date, parse_iso


class SifError(ValueError):
    """Not a SIF, or too damaged to read its header/descriptors."""


@dataclass(frozen=True)
class SifObject:
    """One used descriptor, as ``siftool list`` shows it."""

    id: int
    group: int | None  # None = no group
    link: str | None  # "object 3" / "group 1"
    type_code: int
    type_name: str
    name: str
    offset: int
    size: int
    created: dt.datetime | None
    modified: dt.datetime | None


@dataclass(frozen=True)
class SquashfsInfo:
    """The squashfs superblock at the start of a partition."""

    compression: str
    block_size: int
    inodes: int
    created: dt.datetime | None
    version: str
    bytes_used: int


@dataclass(frozen=True)
class PartitionInfo:
    """A file-system partition (data type 0x4004) and its extra fields."""

    object_id: int
    fs_type: str
    partition_type: str
    arch: str
    size: int
    squashfs: SquashfsInfo | None


@dataclass(frozen=True)
class SignatureInfo:
    """A signature object. Whether it verifies is not checked: that needs keys."""

    object_id: int
    kind: str  # "PGP", "DSSE" or "unknown"
    hash_type: str
    fingerprint: str | None  # uppercase hex of the 20-byte entity prefix; None if all zero
    signs: str | None  # the link: "group 1" (current format) / "object 3" (legacy)
    legacy: bool  # old Singularity layout: inside a group, or named "part-signature"


@dataclass(frozen=True)
class SifInfo:
    """Everything the catalog shows about one SIF file. Times are UTC, None when unset."""

    launch_script: str
    version: str
    arch: str
    uuid: str | None
    created: dt.datetime | None
    modified: dt.datetime | None
    descriptors_total: int
    descriptors_free: int
    data_offset: int
    data_size: int
    file_size: int
    objects: tuple[SifObject, ...]
    definition: str | None
    labels: dict[str, str]
    environment: dict[str, str]
    runscript: str | None
    startscript: str | None
    test: str | None
    helpfile: str | None
    apps: dict[str, dict]
    oci_config: dict | None
    partitions: tuple[PartitionInfo, ...]
    signatures: tuple[SignatureInfo, ...]
    encrypted: bool
    sbom_formats: tuple[str, ...]
    oci_sif: bool
    problems: tuple[str, ...]

    @property
    def signed(self) -> bool:
        """At least one signature object (the Sylabs library's rule; nothing is verified)."""
        return bool(self.signatures)

    @property
    def created_best(self) -> dt.datetime | None:
        """Header time, else the OCI ``created`` label, else label-schema's build-date."""
        return (
            self.created
            or parse_iso(self.labels.get("org.opencontainers.image.created"))
            or parse_build_date(self.labels.get("org.label-schema.build-date"))
        )
