"""The merged root filesystem in a converted SIF is what the OCI reference unpacker (umoci)
makes of the same image: whiteouts, opaque directories, replacements, hard links across
layers, special mode bits, owners, long names, empty and zstd layers."""

from __future__ import annotations

import io
import logging
import subprocess
import tarfile
from pathlib import Path

from tests.support.conversion import (
    assert_same_tree,
    convert_image,
    partition,
    partition_listing,
    umoci_listing,
)
from tests.support.layers import Entry, image, layer, write_oci_layout
from tests.support.rootfs import Item

DEEP = "/".join(f"level{n:02d}" for n in range(24))
LONG_NAME = "n" * 200


def _edge_case_image(middle_compression: str = "gzip"):
    bottom = layer(
        [
            Entry("etc", "dir"),
            Entry("etc/hosts", data=b"127.0.0.1 localhost\n"),
            Entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
            Entry("bin", "dir"),
            Entry("bin/su", data=b"setuid", mode=0o4755),
            Entry("bin/sg", data=b"setgid", mode=0o2711, gid=42),
            Entry("scratch", "dir", mode=0o1777),
            Entry("home", "dir"),
            Entry("home/user", "dir", mode=0o700, uid=1000, gid=100),
            Entry("home/user/notes", data=b"mine", mode=0o600, uid=1000, gid=100),
            Entry("data", "dir"),
            Entry("data/a", data=b"content A"),
            Entry("data/a-link", "hardlink", link="data/a"),
            Entry("data/b", data=b"content B"),
            Entry("opaque", "dir"),
            Entry("opaque/old", "dir"),
            Entry("opaque/old/x", data=b"x"),
            Entry("opaque/y", data=b"y"),
            Entry("lib/libfoo.so.1", data=b"v1"),  # no entry for lib/: made implicitly
            Entry("lib/libfoo.so", "symlink", link="libfoo.so.1"),
            Entry("was-file", data=b"file"),
            Entry("was-dir", "dir"),
            Entry("was-dir/inner", data=b"inner"),
            Entry("run", "dir"),
            Entry("run/fifo", "fifo", mode=0o600),
            Entry(f"{DEEP}/{LONG_NAME}", data=b"deep"),
            Entry("usr/bin/tool", data=b"tool v1", mode=0o755),
        ]
    )
    middle = layer(
        [
            Entry("data/.wh.b"),
            Entry("opaque/.wh..wh..opq"),
            Entry("opaque/new", data=b"new"),
            Entry("data/d", "hardlink", link="data/a"),  # to a file of the layer below
            Entry("was-file", "dir", mode=0o750),
            Entry("was-file/inside", data=b"inside"),
            Entry("was-dir", data=b"now a file"),
            Entry("usr/bin/tool", data=b"tool v2", mode=0o755),
            Entry("data/big", data=bytes(range(256)) * 5000),
        ],
        middle_compression,
    )
    empty = layer([], "plain")
    top = layer(
        [
            Entry("data/.wh.a"),  # a's links keep its content
            Entry("lib/libfoo.so.1", data=b"v2"),
            Entry("etc", "dir", mode=0o750),  # metadata replaced, children kept
        ]
    )
    return image([bottom, middle, empty, top], {"Cmd": ["/bin/sh"]})


def test_partition_holds_what_umoci_unpacks(tmp_path: Path):
    test_image = _edge_case_image()
    _, sif = convert_image(tmp_path, test_image)
    ours = partition_listing(sif.path, tmp_path)
    theirs = umoci_listing(write_oci_layout(tmp_path / "layout", test_image), tmp_path / "bundle")

    assert_same_tree(ours, theirs)
    # what the image's layers say, checked on our side directly as well
    assert "data/b" not in ours.items and "data/a" not in ours.items
    assert set(ours.items) & {"opaque/old", "opaque/y"} == set()
    assert ours.items["opaque/new"].kind == "file"
    assert ours.hardlinks == {frozenset({"data/a-link", "data/d"})}
    assert ours.items["data/d"].sha256 == ours.items["data/a-link"].sha256
    assert ours.items["bin/su"] == Item("file", 0o4755, 0, 0, sha256=ours.items["bin/su"].sha256)
    assert ours.items["bin/sg"].mode == 0o2711 and ours.items["bin/sg"].gid == 42
    assert ours.items["scratch"].mode == 0o1777
    assert ours.items["home/user/notes"].uid == 1000
    assert ours.items[f"{DEEP}/{LONG_NAME}"].kind == "file"
    assert ours.items["was-file"].kind == "dir" and "was-file/inside" in ours.items
    assert ours.items["was-dir"].kind == "file" and "was-dir/inner" not in ours.items
    assert ours.items["run/fifo"].kind == "fifo"
    assert ours.items["etc"].mode == 0o750 and "etc/passwd" in ours.items


def test_a_zstd_layer_gives_the_partition_its_gzip_twin_gives(tmp_path: Path):
    # Debian's umoci reads no zstd layer: compare with the same layer gzipped instead.
    _, zstd_sif = convert_image(tmp_path / "zstd", _edge_case_image("zstd"))
    _, gzip_sif = convert_image(tmp_path / "gzip", _edge_case_image("gzip"))

    labels = (".singularity.d/labels.json",)  # they name the source manifest digest
    from_zstd = partition_listing(zstd_sif.path, tmp_path / "zstd").without(labels)
    from_gzip = partition_listing(gzip_sif.path, tmp_path / "gzip").without(labels)
    assert from_zstd == from_gzip


def test_symlinked_parents_are_followed_inside_the_root(tmp_path: Path):
    test_image = image(
        [
            layer(
                [
                    Entry("usr/lib", "dir"),
                    Entry("lib", "symlink", link="usr/lib"),
                    Entry("opt/abs", "symlink", link="/usr"),
                    Entry("opt/up", "symlink", link="../../../usr"),  # '..' stops at the root
                ]
            ),
            layer(
                [
                    Entry("lib/one", data=b"1"),
                    Entry("opt/abs/two", data=b"2"),
                    Entry("opt/up/three", data=b"3"),
                ]
            ),
        ]
    )
    _, sif = convert_image(tmp_path, test_image)
    ours = partition_listing(sif.path, tmp_path)
    theirs = umoci_listing(write_oci_layout(tmp_path / "layout", test_image), tmp_path / "bundle")

    assert_same_tree(ours, theirs)
    assert {"usr/lib/one", "usr/two", "usr/three"} <= set(ours.items)
    assert ours.items["lib"] == Item("symlink", 0o777, 0, 0, "usr/lib")


def test_gnu_tar_long_names_and_large_ids(tmp_path: Path):
    long_dir = "g" * 120
    test_image = image(
        [
            layer(
                [
                    Entry(f"{long_dir}/{'h' * 140}", data=b"gnu", uid=5_000_000, gid=3_000_000),
                    Entry(f"{long_dir}/link", "symlink", link="t" * 150),
                    Entry(f"{long_dir}/hard", "hardlink", link=f"{long_dir}/{'h' * 140}"),
                ],
                tar_format=tarfile.GNU_FORMAT,
            )
        ]
    )
    _, sif = convert_image(tmp_path, test_image)
    ours = partition_listing(sif.path, tmp_path)
    theirs = umoci_listing(write_oci_layout(tmp_path / "layout", test_image), tmp_path / "bundle")

    assert_same_tree(ours, theirs)
    assert ours.items[f"{long_dir}/{'h' * 140}"].uid == 5_000_000
    assert ours.items[f"{long_dir}/link"].target == "t" * 150
    assert len(ours.hardlinks) == 1


def test_xattrs_are_kept(tmp_path: Path):
    capability = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    test_image = image(
        [
            layer(
                [
                    Entry("bin/ping", data=b"ping", mode=0o755,
                          xattrs={"security.capability": capability, "user.origin": "test"}),
                ]
            )
        ]
    )  # fmt: skip
    _, sif = convert_image(tmp_path, test_image)
    tar_bytes = subprocess.run(
        ["sqfs2tar", str(partition(sif.path, tmp_path))], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        headers = tar.getmember("bin/ping").pax_headers
    assert headers["SCHILY.xattr.user.origin"] == "test"
    raw = headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
    assert raw == capability.encode("latin-1")


def test_device_nodes_are_dropped_and_logged(tmp_path: Path, caplog):
    test_image = image(
        [
            layer(
                [
                    Entry("dev", "dir"),
                    Entry("dev/null", "char", mode=0o666),
                    Entry("dev/sda", "block", mode=0o660),
                    Entry("dev/keep", data=b"a file"),
                ]
            )
        ]
    )
    with caplog.at_level(logging.WARNING, logger="mirror.convert"):
        _, sif = convert_image(tmp_path, test_image)
    ours = partition_listing(sif.path, tmp_path)

    assert {p for p in ours.items if p.startswith("dev/")} == {"dev/keep"}
    assert sif.dropped_devices == 2
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/dev/null of layer 1" in logged and "/dev/sda of layer 1" in logged
    assert str(test_image.digest) in logged
