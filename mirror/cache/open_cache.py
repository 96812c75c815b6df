"""Opening the cache as a process uses it: the shared store, and this node's database with
the metadata cache and pull statistics in it, closed in the right order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import diskcache

from mirror.cache.metadata import MetadataCache
from mirror.cache.pulls import PullStats, node_name
from mirror.cache.store import ContentStore
from mirror.config import CacheConfig


class OpenCache(NamedTuple):
    """The three parts of an open cache; unpacks as `(store, metadata, pulls)`."""

    store: ContentStore
    metadata: MetadataCache
    pulls: PullStats


def open_node_db(index_dir: Path) -> diskcache.Cache:
    """The node-local database of the metadata cache and pull counts. Eviction is off:
    entries are small, and pull statistics must not vanish silently."""
    index_dir.mkdir(parents=True, exist_ok=True)
    return diskcache.Cache(str(index_dir), eviction_policy="none")


@contextmanager
def open_cache(config: CacheConfig, *, create: bool = True) -> Iterator[OpenCache]:
    """The cache of `config` for the block; on exit this node's pull counts are flushed
    and published, then its database is closed. `create=False`: see `ContentStore`."""
    store = ContentStore(config.root, create=create)
    db = open_node_db(config.index_dir)
    pulls = PullStats(db, store, node_name(config.index_dir))
    try:
        yield OpenCache(store, MetadataCache(db, store), pulls)
    finally:
        try:
            with store.refusals.tolerated("this node's pull statistics"):
                pulls.close()
        finally:
            db.close()
