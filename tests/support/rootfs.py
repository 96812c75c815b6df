"""What a root filesystem holds, read the same way from a squashfs (through squashfs-tools-
ng's `sqfs2tar`) and from a directory (`umoci unpack`'s rootfs): per path its type, mode,
owner, symlink target and content hash, and the groups of hard-linked paths."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Item:
    kind: str  # dir, file, symlink, fifo, char, block
    mode: int  # permission bits with setuid/setgid/sticky
    uid: int
    gid: int
    target: str = ""  # of a symlink
    sha256: str = ""  # of a file's content


@dataclass
class Listing:
    items: dict[str, Item]  # path without a leading slash; the root is left out
    hardlinks: set[frozenset[str]]  # each group of two or more names of one file

    def without(self, prefixes: tuple[str, ...]) -> Listing:
        """The listing less every path equal to or below one of `prefixes`."""

        def kept(path: str) -> bool:
            return not any(path == p or path.startswith(p + "/") for p in prefixes)

        groups = {frozenset(p for p in g if kept(p)) for g in self.hardlinks}
        return Listing(
            {p: i for p, i in self.items.items() if kept(p)}, {g for g in groups if len(g) > 1}
        )


def squashfs_listing(squashfs: Path) -> Listing:
    """The tree of a squashfs image, read through `sqfs2tar` (hard links kept as such)."""
    process = subprocess.Popen(
        ["sqfs2tar", "--no-skip", str(squashfs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    items: dict[str, Item] = {}
    links: dict[str, set[str]] = {}
    with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
        for member in tar:
            path = member.name.strip("/")
            if member.islnk():
                target = member.linkname.strip("/")
                links.setdefault(target, {target}).add(path)
                items[path] = items[target]
                continue
            digest = ""
            if member.isreg():
                source = tar.extractfile(member)
                assert source is not None
                digest = hashlib.sha256(source.read()).hexdigest()
            items[path] = Item(
                _tar_kind(member),
                member.mode,
                member.uid,
                member.gid,
                member.linkname if member.issym() else "",
                digest,
            )
    stderr = process.stderr.read() if process.stderr else b""
    assert process.wait() == 0, stderr.decode(errors="replace")
    return Listing(items, {frozenset(group) for group in links.values()})


def directory_listing(root: Path) -> Listing:
    """The tree under `root` (not following symlinks)."""
    items: dict[str, Item] = {}
    inodes: dict[int, set[str]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(directory) / name
            path = str(full.relative_to(root))
            info = os.lstat(full)
            kind = _stat_kind(info.st_mode)
            digest = ""
            if kind == "file":
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                if info.st_nlink > 1:
                    inodes.setdefault(info.st_ino, set()).add(path)
            target = os.readlink(full) if kind == "symlink" else ""
            items[path] = Item(
                kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, target, digest
            )
    return Listing(items, {frozenset(g) for g in inodes.values() if len(g) > 1})


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.isfifo():
        return "fifo"
    if member.ischr():
        return "char"
    if member.isblk():
        return "block"
    return "file"


def _stat_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
    ):
        if test(mode):
            return kind
    return "file"
