"""The metadata index: a rebuildable cache over the store, and pull statistics that every
node publishes in a file of its own and every node reads summed."""

from mirror.cache.index import MetadataIndex
from mirror.cache.store import ContentStore, TagRecord
from mirror.reference import Digest, Repository

REPO = Repository("up.test", "tools/alpha")


def test_index_reads_through_to_the_store(tmp_path):
    store = ContentStore(tmp_path / "cache")
    writer = MetadataIndex(tmp_path / "index-a", store)
    record = TagRecord(Digest("a" * 64), "application/x", 10.0)
    writer.put_tag(REPO, "1.0", record)
    writer.close()
    other = MetadataIndex(tmp_path / "index-b", store)  # another node: empty index
    assert other.tag(REPO, "1.0") == record
    other.close()


def test_pull_statistics_are_summed_across_nodes(tmp_path):
    store = ContentStore(tmp_path / "cache")
    node_a = MetadataIndex(tmp_path / "index-a", store)
    node_b = MetadataIndex(tmp_path / "index-b", store)
    for _ in range(3):
        node_a.record_pull(REPO, "1.0")
    node_b.record_pull(REPO, "1.0")
    node_b.record_pull(REPO, "latest")
    node_a.close()  # flushes and publishes node A's counts
    node_b.flush_pulls()
    counts = {ref: count for ref, (count, _) in node_b.pull_stats(REPO).items()}
    assert counts == {"1.0": 4, "latest": 1}
    node_b.close()
    files = sorted(p.name for p in (tmp_path / "cache" / "stats").iterdir())
    assert len(files) == 2  # one per node: no two nodes write the same file
    reader = MetadataIndex(tmp_path / "index-c", store)
    assert {ref: c for ref, (c, _) in reader.pull_stats(REPO).items()} == counts
    reader.close()
