"""The metadata cache: a rebuildable node-local cache over the store's repository metadata."""

from mirror.cache.metadata import MetadataCache
from mirror.cache.open_cache import open_node_db
from mirror.cache.store import ContentStore, TagRecord
from mirror.reference import Digest, Repository

REPO = Repository("up.test", "tools/alpha")


def test_metadata_reads_through_to_the_store(tmp_path):
    store = ContentStore(tmp_path / "cache")
    with open_node_db(tmp_path / "index-a") as db:
        MetadataCache(db, store).put_tag(REPO, "1.0", TagRecord(Digest("a" * 64), "a/x", 10.0))
    with open_node_db(tmp_path / "index-b") as db:  # another node: empty database
        assert MetadataCache(db, store).tag(REPO, "1.0") == TagRecord(Digest("a" * 64), "a/x", 10.0)
