"""The SIF tree: every verified SIF artifact, as a plain file at a predictable path.

`<sif_tree>/<prefix>/<repository>/<tag>.sif` is a hard link to the SIF layer's blob in the
store (a symlink where the tree is on another filesystem), so a job runs
`apptainer exec /path/to/tool/1.0.sif` on any node with no pull at all; an image converted
to a SIF appears under its source image's name. Blobs are
read-only, and so is every link to them. When a tag moves, its path is switched to the
new blob in one rename: a running job keeps the file it opened.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mirror.cache.dirs import make_dirs
from mirror.cache.store import ContentStore
from mirror.reference import Digest, Repository

log = logging.getLogger(__name__)


class SifTree:
    def __init__(self, root: Path, store: ContentStore) -> None:
        self.root = root
        self._store = store
        self._waiting: dict[str, set[tuple[Repository, str]]] = {}  # SIF blob -> tags

    def tag_fetched(self, repo: Repository, tag: str, layer: Digest) -> None:
        """A SIF tag's manifest was fetched: publish it now if its file is cached, else
        as soon as it is (`blob_cached`)."""
        if self._store.blob_size(layer) is not None:
            self.publish(repo, tag, layer)
        else:
            self._waiting.setdefault(layer.hex, set()).add((repo, tag))

    def blob_cached(self, digest: Digest) -> None:
        for repo, tag in self._waiting.pop(digest.hex, ()):
            self.publish(repo, tag, digest)

    def path(self, repo: Repository, tag: str, platform: str = "") -> Path:
        """`<prefix>/<repository>/<tag>.sif`; an image converted for a `platform` other than
        `[sif] platform` is `<tag>+<os>-<arch>[-<variant>].sif` (no tag holds a `+`)."""
        return self.root / sif_tree_path(repo, tag, platform)

    def publish(self, repo: Repository, tag: str, layer: Digest, platform: str = "") -> None:
        """Point `repo:tag` (converted for `platform`, if given) at the cached SIF blob
        `layer` (which must be in the store)."""
        blob = self._store.blob_path(layer)
        target = self.path(repo, tag, platform)
        try:
            if _same_file(target, blob):
                return
            make_dirs(target.parent)
            temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            temp.unlink(missing_ok=True)
            try:
                os.link(blob, temp)
            except OSError:  # another filesystem: a symlink still gives a path to run
                os.symlink(blob, temp)
            os.rename(temp, target)
        except OSError as exc:  # the tree is a convenience; never fail a pull over it
            log.warning("could not publish %s:%s in the SIF tree: %s", repo, tag, exc)


def sif_tree_path(repo: Repository, tag: str, platform: str = "") -> str:
    """Where `repo:tag` is in any SIF tree, relative to its root (see `SifTree.path`)."""
    label = f"+{platform.replace('/', '-')}" if platform else ""
    return f"{repo.prefix}/{repo.name}/{tag}{label}.sif"


def _same_file(path: Path, blob: Path) -> bool:
    try:
        return os.path.samefile(path, blob)
    except OSError:
        return False
