"""Run the converter on a test image and take its result apart with tools no one here
wrote: Sylabs' `siftool` for the SIF, `umoci unpack` for what the OCI reference unpacker
makes of the same image, squashfs-tools for the partition."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mirror import config
from mirror.cache.store import ContentStore
from mirror.config import SifConfig
from mirror.convert.converter import ConvertedSif, convert
from mirror.reference import Digest

from .layers import BuiltImage, put_in_store
from .rootfs import Item, Listing, directory_listing, squashfs_listing

REFERENCE = "registry.test/convert/image:1"
# What the converter adds to or changes in every image (README, "SIF conversion").
RUNTIME_LINKS = {
    "singularity": ".singularity.d/runscript",
    ".run": ".singularity.d/actions/run",
    ".exec": ".singularity.d/actions/exec",
    ".test": ".singularity.d/actions/test",
    ".shell": ".singularity.d/actions/shell",
    "environment": ".singularity.d/env/90-environment.sh",
}
MOUNT_DIRS = {"dev", "proc", "sys", "tmp", "var", "var/tmp", "home", "root", "etc"}
MOUNT_FILES = ("etc/hosts", "etc/resolv.conf")


def sif_config(**overrides: object) -> SifConfig:
    return config.load(overrides={"sif": overrides} if overrides else None).sif


def convert_image(
    workdir: Path, test_image: BuiltImage, *, reference: str = REFERENCE, **overrides: object
) -> tuple[ContentStore, ConvertedSif]:
    """Put the image into a fresh store under `workdir` and convert it there."""
    store = ContentStore(workdir / "cache")
    digest = put_in_store(store, test_image)
    return store, convert_stored(store, digest, reference, **overrides)


def convert_stored(
    store: ContentStore, digest: Digest, reference: str = REFERENCE, **overrides: object
) -> ConvertedSif:
    return convert(store, digest, reference, sif_config(**overrides), store.temp_path("sif"))


def siftool(*args: str | Path) -> str:
    result = subprocess.run(["siftool", *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def partition(sif: Path, workdir: Path) -> Path:
    """The SIF's system partition (object 4), dumped by siftool into a file."""
    target = workdir / f"{sif.name}.squashfs"
    with open(target, "wb") as out:
        subprocess.run(["siftool", "dump", "4", str(sif)], stdout=out, check=True)
    return target


def umoci_rootfs(layout_ref: str, bundle: Path) -> Path:
    """`umoci unpack` of the image at `layout_ref` (`<layout dir>:<tag>`); its rootfs."""
    result = subprocess.run(
        ["umoci", "unpack", "--image", layout_ref, str(bundle)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return bundle / "rootfs"


def assert_same_tree(ours: Listing, theirs: Listing) -> None:
    """`ours` (the partition) holds exactly `theirs` (umoci's rootfs) plus the runtime tree
    and the mount points; the mount files are empty."""
    runtime = (".singularity.d", *RUNTIME_LINKS, *MOUNT_FILES)
    mine, reference = ours.without(runtime), theirs.without(runtime)
    added = set(mine.items) - set(reference.items)
    assert added <= MOUNT_DIRS, sorted(added - MOUNT_DIRS)
    for path in added:
        assert mine.items[path] == Item("dir", 0o755, 0, 0), path
    missing = set(reference.items) - set(mine.items)
    assert not missing, sorted(missing)
    different = {
        path: (mine.items[path], item)
        for path, item in reference.items.items()
        if mine.items[path] != item
    }
    assert not different, different
    assert mine.hardlinks == reference.hardlinks
    for link, target in RUNTIME_LINKS.items():
        if link not in theirs.items:
            assert ours.items[link] == Item("symlink", 0o777, 0, 0, target), link
    for path in MOUNT_FILES:
        if theirs.items.get(path, Item("file", 0, 0, 0)).kind == "file":
            assert ours.items[path] == Item("file", 0o644, 0, 0, sha256=_EMPTY), path


_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def partition_listing(sif: Path, workdir: Path) -> Listing:
    return squashfs_listing(partition(sif, workdir))


def umoci_listing(layout_ref: str, bundle: Path) -> Listing:
    return directory_listing(umoci_rootfs(layout_ref, bundle))
