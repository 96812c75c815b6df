"""Pull statistics: every node publishes its counts in a file of its own, every node reads
them summed; `open_cache` publishes this node's counts when it closes."""

from mirror.cache.open_cache import open_cache, open_node_db
from mirror.cache.pulls import NEVER_PULLED, PullStats, node_name
from mirror.cache.store import ContentStore
from mirror.config import load
from mirror.reference import Repository

REPO = Repository("up.test", "tools/alpha")


def _counts(pulls: PullStats) -> dict[str, int]:
    return {reference: pull.times for reference, pull in pulls.counts(REPO).items()}


def test_pull_statistics_are_summed_across_nodes(tmp_path):
    store = ContentStore(tmp_path / "cache")
    db_a, db_b = open_node_db(tmp_path / "index-a"), open_node_db(tmp_path / "index-b")
    node_a = PullStats(db_a, store, node_name(tmp_path / "index-a"))
    node_b = PullStats(db_b, store, node_name(tmp_path / "index-b"))
    for _ in range(3):
        node_a.record(REPO, "1.0")
    node_b.record(REPO, "1.0")
    node_b.record(REPO, "latest")
    node_a.close()  # flushes and publishes node A's counts
    assert node_b.flush() and not node_b.flush()
    assert _counts(node_b) == {"1.0": 4, "latest": 1}
    assert node_b.counts(REPO)["latest"].last_pulled > 0
    node_b.close()
    files = sorted(p.name for p in (tmp_path / "cache" / "stats").iterdir())
    assert len(files) == 2  # one per node: no two nodes write the same file
    with open_node_db(tmp_path / "index-c") as db_c:
        reader = PullStats(db_c, store, node_name(tmp_path / "index-c"))
        assert _counts(reader) == {"1.0": 4, "latest": 1}
        assert reader.counts(Repository("up.test", "other")).get("1.0", NEVER_PULLED).times == 0
    db_a.close()
    db_b.close()


def test_open_cache_publishes_this_nodes_pulls_when_it_closes(tmp_path):
    config = load(
        None, {"cache": {"root": str(tmp_path / "cache"), "index_dir": str(tmp_path / "index")}}
    ).cache
    with open_cache(config) as (store, metadata, pulls):
        pulls.record(REPO, "1.0")
        assert store.list_repositories() == metadata.repositories() == []
    assert [p.name for p in (tmp_path / "cache" / "stats").iterdir()] == [
        f"{node_name(tmp_path / 'index')}.json"
    ]
    with open_cache(config) as cache:  # the counts were kept in the node's database too
        assert _counts(cache.pulls) == {"1.0": 1}
