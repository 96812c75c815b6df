"""Tests of the SIF reader (mirror/sif.py) against files from the independent test writer
(tests/support/sifwriter.py) and real mksquashfs output.

Expected values come from what we handed the writer (or from ``unsquashfs -s``), never from
the reader's own tables, so a wrong code table in the reader shows up here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from mirror.sif.model import SifError, SifInfo
from mirror.sif.reader import looks_like_sif, read_sif
from tests.support.sifwriter import (
    GO_ZERO_TIME,
    LEGACY_DATA_OFFSET,
    CryptoMessage,
    DataType,
    DefinitionFile,
    FsType,
    GenericJSON,
    HashType,
    Partition,
    PartitionType,
    Sbom,
    SbomFormat,
    SifObject,
    Signature,
    build_sif,
    example_sif,
    make_squashfs,
    pgp_like_signature,
)

UTC = dt.timezone.utc
CREATED = 1_700_000_000  # 2023-11-14T22:13:20Z
DEFAULT_DATA_OFFSET = 4096 + 48 * 585


@pytest.fixture(scope="module")
def squashfs(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_squashfs(tmp_path_factory.mktemp("sqfs"))


@pytest.fixture(scope="module")
def unsquashfs_facts(squashfs: bytes, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What ``unsquashfs -s`` says about the image mksquashfs wrote (independent of us)."""
    if shutil.which("unsquashfs") is None:
        pytest.skip("unsquashfs not installed")
    image = tmp_path_factory.mktemp("unsq") / "image.sqfs"
    image.write_bytes(squashfs)
    out = subprocess.run(
        ["unsquashfs", "-s", str(image)], check=True, capture_output=True, text=True
    ).stdout
    return {
        "compression": re.search(r"^Compression (\S+)", out, re.M)[1],
        "block_size": int(re.search(r"^Block size (\d+)", out, re.M)[1]),
        "inodes": int(re.search(r"^Number of inodes (\d+)", out, re.M)[1]),
        "bytes_used": int(re.search(r"^Filesystem size (\d+) bytes", out, re.M)[1]),
        "version": ".".join(re.search(r"SQUASHFS (\d+):(\d+) superblock", out).groups()),
    }


def metadata_json(**attributes) -> bytes:
    return json.dumps({"data": {"attributes": attributes}, "type": "container"}).encode()


@dataclass(kw_only=True)
class OciRootIndex(SifObject):
    data_type: ClassVar[DataType] = DataType.OCI_ROOT_INDEX

    def extra(self) -> bytes:
        return b"sha256:" + hashlib.sha256(self.data).hexdigest().encode()


@dataclass(kw_only=True)
class OciBlob(OciRootIndex):
    data_type: ClassVar[DataType] = DataType.OCI_BLOB


@dataclass(kw_only=True)
class OddObject(SifObject):
    data_type: ClassVar[int] = 0x4ABC


# --- the standard example ------------------------------------------------------------------


def test_example_sif_everything(squashfs: bytes, unsquashfs_facts: dict, tmp_path: Path) -> None:
    ex = example_sif(squashfs, name="tool", version="1.0", created=CREATED)
    path = tmp_path / "tool.sif"
    path.write_bytes(ex.data)
    info = read_sif(path)

    when = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert info.launch_script == "#!/usr/bin/env run-singularity\n"
    assert (info.version, info.arch) == ("01", "amd64")
    assert info.uuid == str(uuid.UUID(bytes=hashlib.md5(b"tool:1.0").digest()))
    assert info.created == info.modified == info.created_best == when
    assert (info.descriptors_total, info.descriptors_free) == (48, 44)
    assert info.data_offset == DEFAULT_DATA_OFFSET
    assert info.file_size == len(ex.data) == info.data_offset + info.data_size

    assert [o.id for o in info.objects] == [1, 2, 3, 4]
    assert [o.type_name for o in info.objects] == ["Def.FILE", "JSON.Generic", "FS", "Signature"]
    assert [o.type_code for o in info.objects] == [0x4001, 0x4006, 0x4004, 0x4005]
    assert [o.name for o in info.objects] == ["", "inspect-metadata.json", "", ""]
    assert [o.group for o in info.objects] == [1, 1, 1, None]
    assert [o.link for o in info.objects] == [None, None, None, "group 1"]
    for obj, written in zip(info.objects, ex.objects):
        assert ex.data[obj.offset : obj.offset + obj.size] == written.data
        assert obj.created == obj.modified == when
    assert info.objects[0].offset == DEFAULT_DATA_OFFSET
    assert info.objects[2].offset % 4096 == 0

    assert info.definition == ex.definition
    assert info.labels == ex.labels
    assert info.environment == {"90-environment.sh": "export TOOL_HOME=/opt/tool\n"}
    assert info.runscript == '#!/bin/sh\nexec /opt/tool/bin/tool "$@"\n'
    assert (info.startscript, info.test, info.helpfile, info.apps) == (None, None, None, {})
    assert info.oci_config is None

    (part,) = info.partitions
    assert (part.object_id, part.fs_type, part.partition_type, part.arch, part.size) == (
        3,
        "Squashfs",
        "PrimSys",
        "amd64",
        len(squashfs),
    )
    sq = part.squashfs
    assert sq is not None
    assert sq.compression == unsquashfs_facts["compression"]
    assert sq.block_size == unsquashfs_facts["block_size"]
    assert sq.inodes == unsquashfs_facts["inodes"]
    assert sq.bytes_used == unsquashfs_facts["bytes_used"]
    assert sq.version == unsquashfs_facts["version"] == "4.0"
    assert sq.created is None  # make_squashfs passes -mkfs-time 0

    (sig,) = info.signatures
    assert (sig.object_id, sig.kind, sig.hash_type, sig.signs, sig.legacy) == (
        4,
        "PGP",
        "SHA256",
        "group 1",
        False,
    )
    assert sig.fingerprint == hashlib.sha1(b"tool:1.0").hexdigest().upper()
    assert sig.fingerprint == ex.fingerprint.hex().upper()
    assert info.signed and not info.encrypted and not info.oci_sif
    assert info.sbom_formats == () and info.problems == ()


def test_reads_open_files_and_bytes(squashfs: bytes, tmp_path: Path) -> None:
    ex = example_sif(squashfs)
    path = tmp_path / "x.sif"
    path.write_bytes(ex.data)
    with open(path, "rb") as f:
        from_file = read_sif(f)
    assert from_file == read_sif(str(path)) == read_sif(io.BytesIO(ex.data)) == read_sif(ex.data)
    assert looks_like_sif(ex.data[:64])


def test_unsigned(squashfs: bytes) -> None:
    info = read_sif(example_sif(squashfs, signed=False).data)
    assert info.signatures == () and not info.signed
    assert [o.type_name for o in info.objects] == ["Def.FILE", "JSON.Generic", "FS"]
    assert info.descriptors_free == 45


def test_other_arch_and_partition_kinds(squashfs: bytes) -> None:
    data = build_sif(
        [
            Partition(data=squashfs, arch="04"),
            Partition(
                data=b"\0" * 200, fs_type=FsType.EXT3, part_type=PartitionType.OVERLAY, arch="12"
            ),
            Partition(data=b"x" * 10, fs_type=FsType.RAW, part_type=PartitionType.DATA, arch="00"),
            Partition(
                data=b"y",
                fs_type=FsType.IMMUTABLE_OBJECT,
                part_type=PartitionType.SYSTEM,
                arch="11",
            ),
        ],
        created=CREATED,
    )
    info = read_sif(data)
    assert info.arch == "arm64"
    assert [(p.fs_type, p.partition_type, p.arch) for p in info.partitions] == [
        ("Squashfs", "PrimSys", "arm64"),
        ("Ext3", "Overlay", "riscv64"),
        ("Raw", "Data", "unknown"),
        ("Archive", "System", "s390x"),
    ]
    assert [p.squashfs is None for p in info.partitions] == [False, True, True, True]
    assert info.definition is None and info.labels == {} and info.problems == ()


def test_header_arch_unknown_falls_back_to_primsys(squashfs: bytes) -> None:
    info = read_sif(build_sif([Partition(data=squashfs, arch="06")], arch="00"))
    assert info.arch == "ppc64le"


def test_apps_scripts_and_oci_config() -> None:
    apps = {"foo": {"runscript": "#!/bin/sh\nfoo\n", "labels": {"A": "1"}}}
    oci_config = {
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Labels": {"maintainer": "me"}}
    }
    info = read_sif(
        build_sif(
            [
                DefinitionFile(data="Bootstrap: docker\nFrom: x\n\u00e9\n".encode() + b"\xff"),
                GenericJSON(
                    name="inspect-metadata.json",
                    data=metadata_json(
                        labels={"A": "b", "n": 3},
                        startscript="start",
                        test="check",
                        helpfile="help me",
                        apps=apps,
                    ),
                ),
                GenericJSON(name="oci-config.json", data=json.dumps(oci_config).encode()),
            ],
            created=CREATED,
        )
    )
    assert info.definition == "Bootstrap: docker\nFrom: x\n\u00e9\n\ufffd"
    assert info.labels == {"A": "b", "n": "3"}
    assert (info.startscript, info.test, info.helpfile) == ("start", "check", "help me")
    assert info.apps == apps and info.oci_config == oci_config
    assert info.runscript is None and info.environment == {} and info.problems == ()


# --- signatures -----------------------------------------------------------------------------


def test_dsse_signature() -> None:
    envelope = {
        "payloadType": "application/vnd.sylabs.sif-metadata+json",
        "payload": "eyJ4IjoxfQ==" * 100,
        "signatures": [{"keyid": "", "sig": "AA=="}],
    }
    info = read_sif(
        build_sif(
            [
                DefinitionFile(data=b"Bootstrap: scratch\n"),
                Signature(data=json.dumps(envelope).encode(), hash_type=HashType.SHA512),
            ],
            created=CREATED,
        )
    )
    (sig,) = info.signatures
    assert (sig.kind, sig.hash_type, sig.fingerprint, sig.signs, sig.legacy) == (
        "DSSE",
        "SHA512",
        None,
        "group 1",
        False,
    )
    assert info.signed


def test_legacy_signature_and_unknown_kind() -> None:
    fingerprint = bytes(range(1, 21))
    info = read_sif(
        build_sif(
            [
                DefinitionFile(data=b"Bootstrap: scratch\n"),
                Partition(data=b"not squashfs at all" * 10, fs_type=FsType.RAW),
                Signature(
                    name="part-signature",
                    group=1,
                    link_group=None,
                    link_object=2,
                    hash_type=HashType.SHA384,
                    fingerprint=fingerprint,
                    data=pgp_like_signature("SIFHASH:\n" + "ab" * 48),
                ),
                Signature(data=b"garbage", hash_type=HashType.BLAKE2B),
            ],
            created=CREATED,
            data_offset=LEGACY_DATA_OFFSET,
        )
    )
    legacy, odd = info.signatures
    assert (legacy.kind, legacy.hash_type, legacy.signs, legacy.legacy) == (
        "PGP",
        "SHA384",
        "object 2",
        True,
    )
    assert legacy.fingerprint == "0102030405060708090A0B0C0D0E0F1011121314"
    assert (odd.kind, odd.hash_type, odd.fingerprint, odd.legacy) == (
        "unknown",
        "BLAKE2b",
        None,
        False,
    )
    assert info.objects[2].group == 1 and info.objects[3].group is None


# --- times, offsets ---------------------------------------------------------------------------


@pytest.mark.parametrize("created", [GO_ZERO_TIME, 0, -5])
def test_deterministic_times_are_none(created: int) -> None:
    info = read_sif(build_sif([DefinitionFile(data=b"Bootstrap: scratch\n")], created=created))
    assert info.created is info.modified is info.created_best is None
    assert info.objects[0].created is info.objects[0].modified is None
    assert info.uuid is None


def test_legacy_data_offset(squashfs: bytes) -> None:
    ex = example_sif(squashfs, data_offset=LEGACY_DATA_OFFSET)
    info = read_sif(ex.data)
    assert info.data_offset == LEGACY_DATA_OFFSET == info.objects[0].offset
    assert info.definition == ex.definition and info.labels == ex.labels
    assert info.partitions[0].squashfs is not None and info.signed
    assert info.problems == ()


def test_custom_descriptor_table_placement() -> None:
    data = build_sif(
        [DefinitionFile(data=b"x")],
        descriptors_capacity=3,
        descriptors_offset=1000,
        created=CREATED,
    )
    info = read_sif(data)
    assert (info.descriptors_total, info.descriptors_free) == (3, 2)
    assert info.data_offset == 1000 + 3 * 585 and info.definition == "x"


def metadata_sif(labels: dict, *, created: int = GO_ZERO_TIME) -> bytes:
    return build_sif(
        [GenericJSON(name="inspect-metadata.json", data=metadata_json(labels=labels))],
        created=created,
    )


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (
            {
                "org.opencontainers.image.created": "2024-10-24T12:32:01+02:00",
                "org.label-schema.build-date": "Monday_1_January_2001_1:1:1_UTC",
            },
            dt.datetime(2024, 10, 24, 10, 32, 1, tzinfo=UTC),
        ),
        (
            {"org.opencontainers.image.created": "2024-10-24T10:32:01Z"},
            dt.datetime(2024, 10, 24, 10, 32, 1, tzinfo=UTC),
        ),
        (
            {"org.label-schema.build-date": "Thursday_24_October_2024_10:32:1_UTC"},
            dt.datetime(2024, 10, 24, 10, 32, 1, tzinfo=UTC),
        ),
        (
            {
                "org.opencontainers.image.created": "not a date",
                "org.label-schema.build-date": "Thursday_24_October_2024_12:32:1_CEST",
            },
            dt.datetime(2024, 10, 24, 10, 32, 1, tzinfo=UTC),
        ),
        (
            {"org.label-schema.build-date": "Friday_3_May_2024_9:5:7_+03"},
            dt.datetime(2024, 5, 3, 6, 5, 7, tzinfo=UTC),
        ),
        ({"org.label-schema.build-date": "Friday_3_May_2024_9:5:7_XYZT"}, None),
        ({"org.label-schema.build-date": "Friday_31_February_2024_9:5:7_UTC"}, None),
        ({"org.label-schema.build-date": "yesterday"}, None),
        ({}, None),
    ],
)
def test_created_best_fallbacks(labels: dict, expected: dt.datetime | None) -> None:
    info = read_sif(metadata_sif(labels))
    assert info.created is None
    assert info.created_best == expected


def test_created_best_prefers_header() -> None:
    info = read_sif(
        metadata_sif({"org.opencontainers.image.created": "2001-01-01T00:00:00Z"}, created=CREATED)
    )
    assert info.created_best == dt.datetime.fromtimestamp(CREATED, UTC)


def test_build_date_written_by_writer_parses(squashfs: bytes) -> None:
    ex = example_sif(squashfs, created=1_729_765_921)  # a Thursday, 10:32:01 UTC
    labels = {"org.label-schema.build-date": ex.labels["org.label-schema.build-date"]}
    assert labels["org.label-schema.build-date"] == "Thursday_24_October_2024_10:32:1_UTC"
    assert read_sif(metadata_sif(labels)).created_best == dt.datetime.fromtimestamp(
        1_729_765_921, UTC
    )


def test_labels_object_fallback() -> None:
    @dataclass(kw_only=True)
    class LabelsObject(SifObject):
        data_type: ClassVar[DataType] = DataType.LABELS

    info = read_sif(build_sif([LabelsObject(data=b'{"Maintainer": "x"}')]))
    assert info.labels == {"Maintainer": "x"} and info.objects[0].type_name == "JSON.Labels"


# --- encryption, SBOM, OCI-SIF, unknown types ------------------------------------------------


def test_encrypted_with_crypto_message() -> None:
    info = read_sif(
        build_sif(
            [
                DefinitionFile(data=b"Bootstrap: scratch\n"),
                Partition(data=bytes(range(256)) * 20, fs_type=FsType.ENCRYPTED_SQUASHFS),
                CryptoMessage(data=b"-----BEGIN MESSAGE-----\nxyz\n", link_object=2),
            ],
            created=CREATED,
        )
    )
    assert info.encrypted
    assert info.partitions[0].fs_type == "Encrypted squashfs"
    assert info.partitions[0].squashfs is None and info.problems == ()
    assert info.objects[2].type_name == "Cryptographic Message"
    assert info.objects[2].link == "object 2"


def test_gocryptfs_partition_is_encrypted() -> None:
    info = read_sif(build_sif([Partition(data=b"\1" * 300, fs_type=6)]))
    assert info.encrypted and info.partitions[0].fs_type == "Gocryptfs squashfs"


def test_sbom_formats() -> None:
    info = read_sif(
        build_sif(
            [
                Sbom(data=b"{}", sbom_format=SbomFormat.SPDX_JSON),
                Sbom(data=b"<x/>", sbom_format=SbomFormat.CYCLONEDX_XML),
                Sbom(data=b"{}", sbom_format=SbomFormat.SYFT_JSON),
                Sbom(data=b"x", sbom_format=SbomFormat.SPDX_TAG_VALUE),
            ]
        )
    )
    assert info.sbom_formats == ("spdx-json", "cyclonedx-xml", "syft-json", "spdx-tag-value")
    assert {o.type_name for o in info.objects} == {"SBOM"}


def test_oci_sif_root_index_and_unknown_type() -> None:
    info = read_sif(
        build_sif(
            [
                OciBlob(data=b'{"config":1}'),
                OciRootIndex(data=b'{"manifests":[]}'),
                OddObject(data=b"?"),
            ]
        )
    )
    assert info.oci_sif and not info.signed and info.arch == "unknown"
    assert [o.type_name for o in info.objects] == ["OCI.Blob", "OCI.RootIndex", "unknown 0x4ABC"]


def test_plain_sif_is_not_oci_sif(squashfs: bytes) -> None:
    assert not read_sif(example_sif(squashfs).data).oci_sif


# --- damage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 10, 33, 45, 100, 127])
def test_truncated_header(squashfs: bytes, cut: int) -> None:
    with pytest.raises(SifError, match="header|SIF_MAGIC"):
        read_sif(example_sif(squashfs).data[:cut])


@pytest.mark.parametrize("cut", [128, 4096, 4096 + 585, DEFAULT_DATA_OFFSET - 1])
def test_truncated_descriptor_table(squashfs: bytes, cut: int) -> None:
    with pytest.raises(SifError, match="truncated"):
        read_sif(example_sif(squashfs).data[:cut])


def test_truncated_inside_partition(squashfs: bytes) -> None:
    ex = example_sif(squashfs, signed=False)
    part_offset = ex.data.index(squashfs)
    info = read_sif(ex.data[: part_offset + 200])
    assert info.problems == ("object 3 extends past the end of the file",)
    assert info.definition == ex.definition and info.labels == ex.labels
    assert info.partitions[0].squashfs is not None  # the superblock is still there


def test_truncated_inside_metadata(squashfs: bytes) -> None:
    ex = example_sif(squashfs)
    cut = ex.data.index(b'{"data"') + 20
    info = read_sif(ex.data[:cut])
    assert "object 2 extends past the end of the file" in info.problems
    assert "object 3 extends past the end of the file" in info.problems
    assert info.definition == ex.definition and info.labels == {}
    assert info.partitions[0].squashfs is None and info.signatures[0].kind == "unknown"
    assert info.file_size == cut


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"\x7fELF" + bytes(4092),
        b"SIF_MAGIC\0" * 100,
        bytes(40000),
    ],
)
def test_not_a_sif(data: bytes) -> None:
    with pytest.raises(SifError):
        read_sif(data)
    assert not looks_like_sif(data[:64])


def test_unsupported_version() -> None:
    data = b"#!/usr/bin/env run-singularity\n\0SIF_MAGIC\0" + b"02\0" + bytes(40000)
    assert looks_like_sif(data[:64])  # the magic alone says "SIF"; the version is read later
    with pytest.raises(SifError, match="version"):
        read_sif(data)


def test_absurd_descriptor_table() -> None:
    good = bytearray(build_sif([DefinitionFile(data=b"x")], descriptors_capacity=2))
    for field_offset, value in [(88, 10**6), (88, -1), (104, 1 << 40), (96, -4096)]:
        bad = bytearray(good)
        bad[field_offset : field_offset + 8] = value.to_bytes(8, "little", signed=True)
        with pytest.raises(SifError):
            read_sif(bytes(bad))


def test_json_problems_and_size_limit(squashfs: bytes) -> None:
    info = read_sif(
        build_sif(
            [
                GenericJSON(name="inspect-metadata.json", data=b"{not json"),
                GenericJSON(name="oci-config.json", data=b"[1, 2]"),
                Partition(data=b"\0" * 4096),
            ]
        )
    )
    assert info.problems == (
        "inspect-metadata.json is not valid JSON",
        "oci-config.json is not a JSON object",
        "object 3 is not a squashfs image (no hsqs magic)",
    )
    assert info.labels == {} and info.oci_config is None

    ex = example_sif(squashfs)
    small = read_sif(ex.data, max_object_bytes=100)
    assert small.labels == {}
    assert small.definition == ex.definition[:100]
    assert small.problems == (
        "definition file is larger than 100 bytes; cut",
        "inspect-metadata.json is larger than 100 bytes; not read",
    )


def test_fuzzed_files_give_sif_error_or_info(tmp_path: Path) -> None:
    """Random cuts and byte changes must never escape as anything but SifError."""
    squashfs = make_squashfs(tmp_path, {"a": b"hello"})
    valid = example_sif(squashfs, created=CREATED).data
    small = build_sif(
        [
            DefinitionFile(data=b"Bootstrap: scratch\n"),
            GenericJSON(name="inspect-metadata.json", data=metadata_json(labels={"a": "b"})),
            Partition(data=squashfs),
            Signature(data=b'{"payloadType":"x"}'),
            Sbom(data=b"{}"),
            CryptoMessage(data=b"k", link_object=3),
        ],
        descriptors_capacity=6,
        descriptors_offset=128,
        created=CREATED,
    )
    rng = random.Random(20240601)
    outcomes = {"info": 0, "error": 0}
    for case in range(400):
        data = bytearray(small if case % 2 else valid)
        if case % 5 == 0:
            del data[rng.randrange(len(data)) :]
        hot_end = min(len(data), 128 + 6 * 585 if case % 2 else DEFAULT_DATA_OFFSET)
        for _ in range(rng.randint(1, 8)):
            if not data:
                break
            pos = rng.randrange(hot_end if rng.random() < 0.8 and hot_end else len(data))
            data[pos] = rng.choice([0, 0xFF, 0x80, 0x7F, rng.randrange(256)])
        try:
            info = read_sif(bytes(data))
        except SifError:
            outcomes["error"] += 1
        else:
            assert isinstance(info, SifInfo)
            info.created_best, info.signed  # noqa: B018 - the properties must not raise
            outcomes["info"] += 1
    assert outcomes["info"] > 50 and outcomes["error"] > 10
