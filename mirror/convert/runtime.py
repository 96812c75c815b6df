"""The Apptainer runtime tree a converted image gets on top of its layers, as one more
layer: `/.singularity.d/` (actions, environment scripts, runscript, labels, definition),
the `/singularity` and other links, and the mount points the runtime binds over.

Mount points, as an `apptainer build` from docker:// leaves them: the directories /dev,
/proc, /sys, /tmp, /var/tmp, /home, /root and /etc are made where the image has nothing
at that path (kept as they are otherwise, symlinks too); /etc/hosts and /etc/resolv.conf
become empty files (mode 0644) where the image has a regular file or nothing (the runtime
binds the host's over them).
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.convert import metadata, scripts
from mirror.convert.image import SourceImage
from mirror.convert.tree import RootfsTree

MOUNT_DIRS = ("dev", "proc", "sys", "tmp", "var/tmp", "home", "root", "etc")
MOUNT_FILES = ("etc/hosts", "etc/resolv.conf")
_LINKS = (
    ("singularity", ".singularity.d/runscript"),
    (".run", ".singularity.d/actions/run"),
    (".exec", ".singularity.d/actions/exec"),
    (".test", ".singularity.d/actions/test"),
    (".shell", ".singularity.d/actions/shell"),
    ("environment", ".singularity.d/env/90-environment.sh"),
)
_DIRS = (".singularity.d", ".singularity.d/libs", ".singularity.d/actions", ".singularity.d/env")


@dataclass(frozen=True, slots=True)
class RuntimeEntry:
    """One entry the converter adds: owned by root, time 0."""

    name: str
    kind: str  # dir, file or symlink
    mode: int
    data: bytes = b""
    link: str = ""


def runtime_files(image: SourceImage) -> list[tuple[str, int, bytes]]:
    """(path, mode, content) of every file under /.singularity.d, always written."""
    found = metadata.labels(image, metadata.sif_arch(image))
    executables = {
        "actions/exec": scripts.ACTION_EXEC,
        "actions/run": scripts.ACTION_RUN,
        "actions/shell": scripts.ACTION_SHELL,
        "actions/start": scripts.ACTION_START,
        "actions/test": scripts.ACTION_TEST,
        "env/01-base.sh": scripts.ENV_BASE,
        "env/10-docker2singularity.sh": metadata.environment(image),
        "env/90-environment.sh": scripts.ENV_ENVIRONMENT,
        "env/94-appsbase.sh": scripts.ENV_APPS_BASE,
        "env/95-apps.sh": scripts.ENV_APPS,
        "env/99-base.sh": scripts.ENV_LAST,
        "env/99-runtimevars.sh": scripts.ENV_RUNTIME_VARS,
        "runscript": metadata.runscript(image),
        "startscript": scripts.STARTSCRIPT,
    }
    files = [(f".singularity.d/{name}", 0o755, text.encode()) for name, text in executables.items()]
    files.append((".singularity.d/labels.json", 0o644, metadata.labels_json(found)))
    files.append((".singularity.d/Singularity", 0o644, metadata.definition(image).encode()))
    return files


def runtime_entries(tree: RootfsTree, image: SourceImage) -> list[RuntimeEntry]:
    """The entries to add to the merged tree `tree`, decided by what the image has."""
    entries = [
        RuntimeEntry(path, "dir", 0o755) for path in (*_DIRS, *MOUNT_DIRS) if not tree.exists(path)
    ]
    for path in MOUNT_FILES:
        node = tree.lookup(path.split("/"))
        if node is None or (node.inode is not None and node.inode.kind == "file"):
            entries.append(RuntimeEntry(path, "file", 0o644))
    for path, target in _LINKS:
        node = tree.lookup([path])
        if node is None or (node.inode is not None and node.inode.kind == "symlink"):
            entries.append(RuntimeEntry(path, "symlink", 0o777, link=target))
    entries += [RuntimeEntry(path, "file", mode, data) for path, mode, data in runtime_files(image)]
    return entries


def add_runtime(tree: RootfsTree, entries: list[RuntimeEntry]) -> None:
    """Apply the runtime entries as the layer after the image's last."""
    for ordinal, entry in enumerate(entries):
        tree.apply(tree.layers, ordinal, entry.name, entry.kind, entry.link, len(entry.data))
