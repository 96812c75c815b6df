"""The merged root filesystem as the layers' tar headers describe it: pass one.

Every entry of every layer is applied in order to an in-memory tree that holds only where
each surviving path came from (layer, entry number) and never any content, so memory grows
with the number of entries, not their size. OCI whiteouts (`.wh.<name>`) and opaque
directories (`.wh..wh..opq`) hide what lower layers put there; a later entry replaces an
earlier one at the same path (directories keep their children); parent components that are
symlinks are followed inside the root, as tar extraction does. Hard links share an `Inode`,
so a link keeps its content when a later layer deletes the name it was made from.
`plan()` then says, for pass two, which entry to write under which name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_ENTRIES = 5_000_000  # more entries than any real image has; bounds the tree's memory
_MAX_SYMLINK_HOPS = 40  # as Linux's path walk
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_KINDS = frozenset({"dir", "file", "symlink", "hardlink", "fifo", "device"})


class EntryRefused(Exception):
    """An entry that cannot be part of a root filesystem; the message says why."""


class Inode:
    """What a file, symlink, fifo or device node is: the entry holding its metadata and
    data, its kind and size. Hard links to it share this object."""

    __slots__ = ("layer", "ordinal", "kind", "size")

    def __init__(self, layer: int, ordinal: int, kind: str, size: int) -> None:
        self.layer, self.ordinal, self.kind, self.size = layer, ordinal, kind, size


class Node:
    """A name in the tree. A directory has `children` and no inode; anything else has an
    inode (and `target` when it is a symlink). `ordinal` -1: a directory no entry made."""

    __slots__ = ("layer", "ordinal", "children", "inode", "target")

    def __init__(
        self,
        layer: int,
        ordinal: int,
        inode: Inode | None = None,
        target: str | None = None,
    ) -> None:
        self.layer, self.ordinal = layer, ordinal
        self.children: dict[str, Node] | None = {} if inode is None else None
        self.inode, self.target = inode, target


@dataclass(frozen=True, slots=True)
class Emit:
    """Write entry number `ordinal` of its layer as `name`; as a hard link to `link_to`
    when that is set (the entry's own content is then written under `link_to`)."""

    name: str
    link_to: str | None = None


@dataclass
class Plan:
    """What pass two writes: per layer, entry number -> Emit; directories no entry made;
    device nodes left out; the rootfs size (each file's bytes once)."""

    actions: list[dict[int, Emit]]
    implicit_dirs: list[str] = field(default_factory=list)
    dropped: list[tuple[str, int]] = field(default_factory=list)  # (path, layer)
    entries: int = 0
    rootfs_bytes: int = 0


def split_name(name: str) -> list[str]:
    """A tar entry's name as path components below the root; refused when it is absolute
    or climbs out of the root ('../x', 'a/../../x')."""
    if name.startswith("/"):
        raise EntryRefused(f"entry {name!r} has an absolute name")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise EntryRefused(f"entry {name!r} escapes the root")
            parts.pop()
        else:
            parts.append(part)
    return parts


class RootfsTree:
    """The merged tree, built by `apply` for each entry of each layer in order."""

    def __init__(self, layers: int) -> None:
        self.layers = layers  # entries of layer `layers` are the converter's own (runtime)
        self.root = Node(-1, -1)
        self.count = 0

    def apply(
        self, layer: int, ordinal: int, name: str, kind: str, link: str = "", size: int = 0
    ) -> None:
        """Apply one entry. `kind`: dir, file, symlink, hardlink, fifo or device; `link` is
        a symlink's target or a hard link's target name."""
        if kind not in _KINDS:
            raise EntryRefused(f"entry {name!r} has an unsupported {kind}")
        self.count += 1
        if self.count > MAX_ENTRIES:
            raise EntryRefused(f"more than {MAX_ENTRIES} entries")
        parts = split_name(name)
        if not parts:
            if kind != "dir":
                raise EntryRefused(f"entry {name!r} (the root) is not a directory")
            self.root.layer, self.root.ordinal = layer, ordinal
            return
        base = parts[-1]
        if base.startswith(_WHITEOUT):
            self._whiteout(parts[:-1], base, layer)
            return
        parent = self._walk(parts[:-1], layer, create=True, name=name)
        assert parent is not None and parent.children is not None
        existing = parent.children.get(base)
        if kind == "dir":
            if existing is not None and existing.children is not None:
                existing.layer, existing.ordinal = layer, ordinal
            else:
                parent.children[base] = Node(layer, ordinal)
            return
        if kind == "hardlink":
            target = self.lookup(split_name(link), name=link)
            if target is None or target.inode is None:
                what = "a directory" if target is not None else "missing"
                raise EntryRefused(f"hard link {name!r} to {link!r}: the target is {what}")
            parent.children[base] = Node(layer, ordinal, target.inode, target.target)
            return
        inode = Inode(layer, ordinal, kind, size)
        parent.children[base] = Node(layer, ordinal, inode, link if kind == "symlink" else None)

    def lookup(self, parts: list[str], name: str = "") -> Node | None:
        """The node at `parts`, parent symlinks followed, the last component not; None if
        there is none."""
        if not parts:
            return self.root
        parent = self._walk(parts[:-1], -1, create=False, name=name or "/".join(parts))
        if parent is None or parent.children is None:
            return None
        return parent.children.get(parts[-1])

    def exists(self, path: str) -> bool:
        try:
            return self.lookup(split_name(path)) is not None
        except EntryRefused:
            return False  # a parent that is a file: nothing can be there

    def _whiteout(self, parent_parts: list[str], base: str, layer: int) -> None:
        parent = self._walk(parent_parts, layer, create=False, name="/".join(parent_parts))
        if parent is None or parent.children is None:
            return  # nothing below to hide
        if base == _OPAQUE:
            for child in list(parent.children):
                self._hide_lower(parent, child, layer)
        elif not base.startswith(_OPAQUE[:8]):  # other .wh..wh. names are AUFS metadata
            hidden = base[len(_WHITEOUT) :]
            if hidden in parent.children:
                self._hide_lower(parent, hidden, layer)

    def _hide_lower(self, parent: Node, name: str, layer: int) -> None:
        """Remove what layers below `layer` put at parent/name, keeping this layer's own
        entries (and the directories holding them)."""
        stack: list[tuple[Node, str, bool]] = [(parent, name, False)]
        while stack:
            holder, child_name, visited = stack.pop()
            assert holder.children is not None
            child = holder.children[child_name]
            if child.children and not visited:
                stack.append((holder, child_name, True))
                stack.extend((child, grandchild, False) for grandchild in child.children)
                continue
            if child.layer < layer and not child.children:
                del holder.children[child_name]

    def _walk(self, parts: list[str], layer: int, *, create: bool, name: str) -> Node | None:
        """The directory at `parts`, following symlinks inside the root (an absolute target
        starts at the root, '..' stops there); missing directories are made when `create`."""
        node = self.root
        above: list[Node] = []
        pending = list(reversed(parts))
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                node = above.pop() if above else self.root
                continue
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None
                child = node.children[part] = Node(layer, -1)
            elif child.children is None:
                if child.target is None or child.inode is None or child.inode.kind != "symlink":
                    raise EntryRefused(f"entry {name!r}: {part!r} on its path is not a directory")
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise EntryRefused(f"entry {name!r}: too many symlinks on its path")
                if child.target.startswith("/"):
                    node, above = self.root, []
                pending.extend(reversed(child.target.split("/")))
                continue
            above.append(node)
            node = child
        return node

    def plan(self) -> Plan:
        """Which entry of which layer pass two writes under which name."""
        plan = Plan([{} for _ in range(self.layers + 1)])
        groups: dict[int, list[tuple[str, Node]]] = {}
        inodes: dict[int, Inode] = {}
        if self.root.ordinal >= 0:
            plan.actions[self.root.layer][self.root.ordinal] = Emit(".")
        stack: list[tuple[str, Node]] = [("", self.root)]
        while stack:
            path, node = stack.pop()
            assert node.children is not None
            for base in sorted(node.children, reverse=True):
                child = node.children[base]
                child_path = f"{path}/{base}" if path else base
                if child.inode is not None:
                    groups.setdefault(id(child.inode), []).append((child_path, child))
                    inodes[id(child.inode)] = child.inode
                    continue
                if child.ordinal >= 0:
                    plan.actions[child.layer][child.ordinal] = Emit(child_path)
                else:
                    plan.implicit_dirs.append(child_path)
                plan.entries += 1
                stack.append((child_path, child))
        for key, names in groups.items():
            self._plan_inode(plan, inodes[key], names)
        return plan

    @staticmethod
    def _plan_inode(plan: Plan, inode: Inode, names: list[tuple[str, Node]]) -> None:
        """The inode's entry is written once, under the name of the entry that made it if
        that name survives (else the first surviving name); every other name is a hard
        link to it."""
        if inode.kind == "device":
            plan.dropped.extend((path, node.layer) for path, node in names)
            return
        names.sort(key=lambda item: item[0])
        primary = next(
            (
                path
                for path, node in names
                if node.ordinal == inode.ordinal and node.layer == inode.layer
            ),
            names[0][0],
        )
        plan.actions[inode.layer][inode.ordinal] = Emit(primary)
        plan.rootfs_bytes += inode.size
        for path, node in names:
            plan.entries += 1
            if path != primary:
                plan.actions[node.layer][node.ordinal] = Emit(path, link_to=primary)
