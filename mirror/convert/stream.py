"""One tar stream of an image's final root filesystem plus the Apptainer runtime tree,
made from the layer blobs without unpacking anything on disk.

Pass one reads every layer's headers (content is decompressed and skipped, never kept) into
the merged tree, which decides what survives; pass two reads the layers again and writes
only the survivors, content streamed through in pieces, then the runtime entries. Layers
with no survivor are not read again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from mirror.convert.image import Layer, SourceImage
from mirror.convert.layers import BudgetExceeded, ByteBudget, LayerDamaged, LayerStream
from mirror.convert.runtime import add_runtime, runtime_entries
from mirror.convert.tar import TarDamaged, TarEntry, TarReader, TarWriter
from mirror.convert.tree import EntryRefused, Plan, RootfsTree
from mirror.errors import ConversionRefused

log = logging.getLogger(__name__)


def write_rootfs_tar(image: SourceImage, max_bytes: int, out: BinaryIO) -> Plan:
    """Write the merged root filesystem of `image` and its runtime tree to `out` as one
    tar stream; ConversionRefused names the image and layer of anything wrong."""
    budget = ByteBudget(max_bytes)
    tree = RootfsTree(len(image.layers))
    for layer in image.layers:
        with _reading(image, layer, budget, max_bytes) as reader:
            for ordinal, entry in enumerate(reader):
                try:
                    tree.apply(
                        layer.number - 1, ordinal, entry.name, entry.kind, entry.link, entry.size
                    )
                except EntryRefused as exc:
                    raise image.layer_error(layer, str(exc)) from None
            reader.finish()  # damage past the tar's end is found too
    runtime = runtime_entries(tree, image)
    try:
        add_runtime(tree, runtime)
    except EntryRefused as exc:
        raise ConversionRefused(f"{image.describe}: cannot add the runtime tree: {exc}") from None
    plan = tree.plan()
    _log_dropped(image, plan)
    writer = TarWriter(out)
    for layer in image.layers:
        actions = plan.actions[layer.number - 1]
        if not actions:
            continue
        last = max(actions)
        with _reading(image, layer, ByteBudget(max_bytes), max_bytes) as reader:
            for ordinal, entry in enumerate(reader):
                action = actions.get(ordinal)
                if action is not None:
                    _copy(writer, reader, entry, action.name, action.link_to)
                if ordinal == last:
                    break
    for ordinal, extra in enumerate(runtime):
        action = plan.actions[len(image.layers)].get(ordinal)
        if action is not None:
            entry = TarEntry(
                action.name, extra.kind, extra.mode, size=len(extra.data), link=extra.link
            )
            writer.entry(entry, (extra.data,) if extra.data else ())
    for path in plan.implicit_dirs:
        writer.entry(TarEntry(path, "dir", 0o755))
    writer.close()
    return plan


def _copy(
    writer: TarWriter, reader: TarReader, entry: TarEntry, name: str, link_to: str | None
) -> None:
    """Write `entry` as `name` (a hard link to `link_to` when set), xattrs and all."""
    if link_to is not None:
        entry.kind, entry.link, entry.size = "hardlink", link_to, 0
    entry.name = name
    writer.entry(entry, reader.content() if entry.size else ())


def _log_dropped(image: SourceImage, plan: Plan) -> None:
    for path, layer_index in plan.dropped:
        log.warning(
            "%s: left out device node /%s of layer %d (%s), as an unprivileged build does",
            image.describe,
            path,
            layer_index + 1,
            image.layers[layer_index].digest,
        )


@contextmanager
def _reading(
    image: SourceImage, layer: Layer, budget: ByteBudget, limit: int
) -> Iterator[TarReader]:
    """A reader over one layer for one pass; damage, bombs and bad tar data become
    ConversionRefused naming the image and the layer."""
    try:
        with LayerStream(layer.path, budget) as stream:
            yield TarReader(stream)
    except BudgetExceeded:
        reason = (
            f"the image's layers hold more than [sif] max_rootfs_bytes = {limit} bytes uncompressed"
        )
        raise image.layer_error(layer, reason) from None
    except LayerDamaged as exc:
        raise image.layer_error(layer, str(exc)) from None
    except TarDamaged as exc:
        raise image.layer_error(layer, f"not a valid tar stream: {exc}") from None
