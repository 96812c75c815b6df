"""A converted SIF read by tools no one here wrote: Sylabs' siftool reads its descriptors
and dumps its partition; the partition of a buildah-built image pulled through a real
mirror equals what umoci unpacks of the same image; its runscript runs in a chroot and
prints what `docker run` prints; two conversions are byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from mirror.cache.store import ContentStore
from mirror.convert.converter import _ID_NAMESPACE
from mirror.convert.sif_file import put_in_front
from mirror.reference import Digest
from mirror.sif.reader import read_sif
from tests.support import busybox_image
from tests.support.clients import skopeo_copy
from tests.support.conversion import (
    REFERENCE,
    assert_same_tree,
    convert_image,
    convert_stored,
    partition,
    partition_listing,
    siftool,
    umoci_listing,
)
from tests.support.layers import Entry, image, layer
from tests.support.proxy import UPSTREAM_PREFIX

CONTAINER = {
    "Entrypoint": ["/bin/echo"],
    "Cmd": ["hello"],
    "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
    "Labels": {"org.opencontainers.image.title": "small"},
    "WorkingDir": "/work",
}


def _small_image(**config):
    return image([layer([Entry("bin/echo", data=b"echo", mode=0o755)])], CONTAINER, **config)


def test_siftool_reads_the_descriptors_and_dumps_the_partition(tmp_path: Path):
    test_image = _small_image()
    _, sif = convert_image(tmp_path, test_image)

    listed = siftool("list", sif.path).splitlines()
    objects = [line.split("|") for line in listed if line[:1].isdigit()]
    assert [(o[0].strip(), o[-1].strip()) for o in objects] == [
        ("1", "Def.FILE"),
        ("2", "JSON.Generic"),
        ("3", "JSON.Generic"),
        ("4", "FS (Squashfs/*System/amd64)"),
    ]
    assert "Name:       inspect-metadata.json" in siftool("info", "2", sif.path)
    assert "Name:       oci-config.json" in siftool("info", "3", sif.path)
    header = siftool("header", sif.path)
    assert "Primary Architecture: amd64" in header
    assert siftool("dump", "1", sif.path) == f"bootstrap: docker\nfrom: {REFERENCE}\n\n"
    assert json.loads(siftool("dump", "3", sif.path)) == CONTAINER
    metadata = json.loads(siftool("dump", "2", sif.path))
    labels = metadata["data"]["attributes"]["labels"]
    assert labels["org.opencontainers.image.title"] == "small"
    assert labels["org.opencontainers.image.base.digest"] == str(test_image.digest)
    assert labels["org.opencontainers.image.created"] == "2024-05-06T07:08:09Z"

    squashfs = partition(sif.path, tmp_path)
    superblock = subprocess.run(
        ["unsquashfs", "-s", str(squashfs)], capture_output=True, text=True, check=True
    ).stdout
    assert "Compression gzip" in superblock
    assert squashfs.stat().st_size + 36864 <= sif.size
    assert sif.digest == Digest.parse("sha256:" + _sha256(sif.path))


def test_the_catalog_reader_finds_what_apptainer_inspect_shows(tmp_path: Path):
    _, sif = convert_image(tmp_path, _small_image())
    info = read_sif(sif.path)

    assert info.arch == "amd64" and not info.problems
    assert info.definition == f"bootstrap: docker\nfrom: {REFERENCE}\n\n"
    assert info.oci_config == CONTAINER
    assert info.runscript is not None and "set -- /bin/echo" in info.runscript
    assert info.created_best is not None and info.created_best.year == 2024
    assert info.partitions[0].squashfs is not None


@pytest.mark.parametrize("compression, code", [("zstd", "zstd"), ("xz", "xz")])
def test_the_configured_compression(tmp_path: Path, compression: str, code: str):
    _, sif = convert_image(tmp_path, _small_image(), compression=compression)
    squashfs = read_sif(sif.path).partitions[0].squashfs
    assert squashfs is not None and squashfs.compression == code


def test_two_conversions_are_byte_identical(tmp_path: Path):
    test_image = image(
        [
            layer([Entry("a", data=os.urandom(300_000)), Entry("b", "hardlink", link="a")]),
            layer([Entry("c/d", data=b"x" * 100_000), Entry(".wh.a")], "zstd"),
        ],
        CONTAINER,
    )
    store, first = convert_image(tmp_path, test_image)
    second = convert_stored(store, test_image.digest)

    assert first.path != second.path
    assert first.digest == second.digest
    assert first.path.read_bytes() == second.path.read_bytes()
    assert siftool("header", first.path).count(str(_expected_id(first))) == 1


def _expected_id(sif) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{sif.converter_version} {sif.source_digest}"))


def test_putting_the_header_in_front_by_copy_gives_the_same_bytes(tmp_path: Path):
    content = os.urandom(5 << 20)
    prefix = os.urandom(40960)
    inserted, copied = tmp_path / "inserted", tmp_path / "copied"
    for path in (inserted, copied):
        path.write_bytes(content)
    put_in_front(inserted, prefix)
    put_in_front(copied, prefix, insert=False)

    assert inserted.read_bytes() == copied.read_bytes() == prefix + content
    assert sorted(os.listdir(tmp_path)) == ["copied", "inserted"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def busybox_digest(upstream, tmp_path_factory) -> str:
    """The buildah-built busybox image, pushed to the session's registry once."""
    workdir = tmp_path_factory.mktemp("buildah")
    return busybox_image.build_and_push(workdir, upstream.host, "convert/busybox")


def _through_the_mirror(proxy, tmp_path: Path) -> tuple[ContentStore, str]:
    """Pull the busybox image through the mirror into an OCI layout with skopeo: the
    mirror's store then holds it."""
    layout = tmp_path / "layout"
    skopeo_copy(proxy.host, "convert/busybox:1", f"oci:{layout}:latest")
    return ContentStore(proxy.cache_root, create=False), f"{layout}:latest"


def test_a_buildah_image_pulled_through_the_mirror_converts_to_what_umoci_unpacks(
    proxy, busybox_digest: str, tmp_path: Path
):
    store, layout_ref = _through_the_mirror(proxy, tmp_path)
    sif = convert_stored(
        store, Digest.parse(busybox_digest), f"{UPSTREAM_PREFIX}/convert/busybox:1"
    )

    ours = partition_listing(sif.path, tmp_path)
    assert_same_tree(ours, umoci_listing(layout_ref, tmp_path / "bundle"))
    assert ours.hardlinks == {frozenset({"data/one", "data/two"})}
    assert ours.items["data/tool"].mode == 0o4755
    assert ours.items["bin/sh"].target == "busybox"


def _unpacked(sif: Path, tmp_path: Path) -> Path:
    root = tmp_path / "unpacked"
    subprocess.run(
        ["unsquashfs", "-no-progress", "-d", str(root), str(partition(sif, tmp_path))],
        capture_output=True,
        check=True,
    )
    return root


CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def _chroot(root: Path, *command: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [CHROOT, str(root), *command],
        env={"PATH": "/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_runscript_prints_what_docker_run_prints(proxy, busybox_digest: str, tmp_path: Path):
    store, _ = _through_the_mirror(proxy, tmp_path)
    sif = convert_stored(store, Digest.parse(busybox_digest), "docker.io/example/busybox:1")
    root = _unpacked(sif.path, tmp_path)

    with_env = ". /.singularity.d/env/10-docker2singularity.sh; exec /.singularity.d/runscript"
    assert _chroot(root, "/bin/sh", "-c", with_env) == busybox_image.EXPECTED_RUN
    # `apptainer run` runs the run action: the environment scripts, then the runscript
    assert _chroot(root, "/.singularity.d/actions/run") == busybox_image.EXPECTED_RUN
    # arguments replace Cmd, passed as they are
    assert _chroot(root, "/singularity", "x", "y  z", "$PATH") == "|x|y  z|$PATH|\n"
    assert _chroot(root, "/.run", "x") == "hello world|x|\n"
    # the image's Env is a default a value from the host overrides (PATH excepted)
    assert _chroot(root, "/.run", "x", env={"GREETING": "from host"}) == "from host|x|\n"
    printed = _chroot(
        root, "/.singularity.d/actions/exec", "/bin/sh", "-c", 'echo "$GREETING:$PATH"'
    )
    assert printed == "hello world:/bin\n"


def test_squashfuse_mounts_the_sif_in_place_and_the_runscript_runs_from_it(
    proxy, busybox_digest: str, tmp_path: Path
):
    """How Apptainer runs a SIF without root: squashfuse at the partition's offset."""
    store, _ = _through_the_mirror(proxy, tmp_path)
    sif = convert_stored(store, Digest.parse(busybox_digest), "docker.io/example/busybox:1")
    offset = read_sif(sif.path).objects[3].offset
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["squashfuse", "-o", f"offset={offset}", str(sif.path), str(mount)], check=True)
    try:
        assert _chroot(mount, "/.singularity.d/actions/run") == busybox_image.EXPECTED_RUN
    finally:
        subprocess.run(["fusermount", "-u", str(mount)], check=True)
