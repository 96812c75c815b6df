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


def test_removals_leave_this_node_and_are_seen_from_the_store_on_others(tmp_path):
    store = ContentStore(tmp_path / "cache")
    digest = Digest("b" * 64)
    with open_node_db(tmp_path / "index-a") as db_a, open_node_db(tmp_path / "index-b") as db_b:
        here, there = MetadataCache(db_a, store), MetadataCache(db_b, store)
        here.put_tag(REPO, "1.0", TagRecord(digest, "a/x", 10.0))
        store.link_manifest(REPO, digest, "a/x")
        for cache in (here, there):  # both remember them now
            assert cache.tag(REPO, "1.0") is not None
            assert cache.manifest_media_type(REPO, digest) == "a/x"
        here.forget_tag(REPO, "1.0")
        here.unlink_manifest(REPO, digest)
        assert here.tag(REPO, "1.0") is None
        assert here.manifest_media_type(REPO, digest) is None
        assert store.read_tag(REPO, "1.0") is None
        assert store.manifest_media_type(REPO, digest) is None
        # The other node remembers until it asks the store, which then forgets for it too.
        assert there.tag(REPO, "1.0") is not None
        assert there.tag(REPO, "1.0", from_store=True) is None
        assert there.tag(REPO, "1.0") is None
        assert there.manifest_media_type(REPO, digest, from_store=True) is None
        assert there.manifest_media_type(REPO, digest) is None
