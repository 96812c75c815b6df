"""The content store: verified, atomic, content-addressed writes on a plain filesystem."""

import hashlib
import os
import time

import pytest

from mirror.cache.store import ContentStore, StoredBlob, TagRecord
from mirror.errors import DigestMismatch
from mirror.reference import Digest, Repository

REPO = Repository("up.test", "tools/alpha")


def _digest(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def test_verified_write_appears_only_when_committed(tmp_path):
    store = ContentStore(tmp_path)
    data = b"layer bytes" * 1000
    digest = _digest(data)
    writer = store.new_writer(digest)
    writer.write(data[:500])
    assert store.blob_size(digest) is None  # nothing under the final path mid-write
    writer.write(data[500:])
    writer.commit()
    assert store.read_blob(digest) == data
    assert store.blob_path(digest) == tmp_path / "blobs" / "sha256" / digest.hex[:2] / digest.hex
    assert list((tmp_path / "tmp").iterdir()) == []


def test_digest_mismatch_leaves_nothing(tmp_path):
    store = ContentStore(tmp_path)
    digest = _digest(b"expected")
    writer = store.new_writer(digest)
    writer.write(b"something else")
    with pytest.raises(DigestMismatch):
        writer.commit()
    assert store.blob_size(digest) is None
    assert list((tmp_path / "tmp").iterdir()) == []


def test_put_bytes_verifies(tmp_path):
    store = ContentStore(tmp_path)
    with pytest.raises(DigestMismatch):
        store.put_bytes(_digest(b"a"), b"b")
    store.put_bytes(_digest(b"a"), b"a")
    assert store.read_blob(_digest(b"a")) == b"a"


def test_repository_links_and_tags(tmp_path):
    store = ContentStore(tmp_path)
    digest = _digest(b"{}")
    store.link_manifest(REPO, digest, "application/vnd.oci.image.manifest.v1+json")
    assert store.manifest_media_type(REPO, digest) == "application/vnd.oci.image.manifest.v1+json"
    assert store.manifest_media_type(Repository("up.test", "other"), digest) is None
    assert not store.blob_linked(REPO, digest)
    store.link_blob(REPO, digest)
    assert store.blob_linked(REPO, digest)
    record = TagRecord(digest, "application/x", 123.5)
    store.write_tag(REPO, "1.0", record)
    assert store.read_tag(REPO, "1.0") == record
    assert store.list_tags(REPO) == ["1.0"]
    assert store.list_repositories() == [REPO]


def test_a_torn_tag_file_reads_as_absent(tmp_path):
    store = ContentStore(tmp_path)
    path = tmp_path / "repositories" / REPO.prefix / REPO.name / "_tags" / "1.0"
    path.parent.mkdir(parents=True)
    path.write_text('{"digest": "sha256:12')
    assert store.read_tag(REPO, "1.0") is None


def test_clean_tmp_removes_only_what_dead_instances_left(tmp_path):
    import os
    import time

    store = ContentStore(tmp_path)
    live = store.claim_fill(_digest(b"live"))  # a running fill: fresh heartbeat
    dead = store.claim_fill(_digest(b"dead"))
    dead_path, live_path = dead.temp_path, live.temp_path
    old = time.time() - 100
    os.utime(dead_path, (old, old))
    staged = store.temp_path("import")  # e.g. a bundle import staging a blob
    staged.write_bytes(b"x")
    os.utime(staged, (old, old))
    assert store.clean_tmp(stale_seconds=30) == 1
    assert not dead_path.exists() and live_path.exists() and staged.exists()
    assert store.claim_fill(_digest(b"live")) is None  # still claimed
    assert store.claim_fill(_digest(b"dead")) is not None  # free again


def test_blobs_lists_what_is_stored_and_delete_blob_removes_it(tmp_path):
    store = ContentStore(tmp_path)
    small, large = b"small", b"large" * 100
    store.put_bytes(_digest(small), small)
    store.put_bytes(_digest(large), large)
    filling = store.claim_fill(_digest(b"in progress"))  # in tmp/: not a blob yet
    filling.write(b"in pro")
    expected = sorted(
        [StoredBlob(_digest(small), len(small)), StoredBlob(_digest(large), len(large))],
        key=lambda b: b.digest.hex,
    )
    assert list(store.blobs()) == expected
    store.delete_blob(_digest(small))
    store.delete_blob(_digest(small))  # already gone: fine
    assert list(store.blobs()) == [StoredBlob(_digest(large), len(large))]
    assert store.blob_size(_digest(small)) is None
    filling.abort()


def test_quarantine_takes_a_blob_out_of_service_and_keeps_its_bytes(tmp_path):
    store = ContentStore(tmp_path)
    store.put_bytes(_digest(b"bad"), b"bad")
    moved = store.quarantine_blob(_digest(b"bad"))
    assert moved.is_relative_to(store.quarantine_dir) and moved.read_bytes() == b"bad"
    assert store.quarantine_dir == tmp_path / "quarantine"
    assert store.blob_size(_digest(b"bad")) is None and list(store.blobs()) == []


def test_manifest_and_blob_links_can_be_listed_and_removed(tmp_path):
    store = ContentStore(tmp_path)
    first, second = _digest(b"1"), _digest(b"2")
    before = time.time()
    for digest in (second, first):
        store.link_manifest(REPO, digest, "application/x")
    assert store.linked_manifests(REPO) == sorted([first, second], key=lambda d: d.hex)
    assert store.linked_manifests(Repository("up.test", "other")) == []
    assert store.manifest_linked_at(REPO, first) >= before - 1
    store.unlink_manifest(REPO, first)
    store.unlink_manifest(REPO, first)  # already gone: fine
    assert store.linked_manifests(REPO) == [second]
    assert store.manifest_linked_at(REPO, first) is None
    assert store.manifest_media_type(REPO, first) is None
    store.link_blob(REPO, first)
    store.unlink_blob(REPO, first)
    assert not store.blob_linked(REPO, first)


def test_tag_records_skip_torn_tags_and_untag_removes_one(tmp_path):
    store = ContentStore(tmp_path)
    one = TagRecord(_digest(b"1"), "application/x", 1.0)
    two = TagRecord(_digest(b"2"), "application/x", 2.0)
    store.write_tag(REPO, "2.0", two)
    store.write_tag(REPO, "1.0", one)
    torn = tmp_path / "repositories" / REPO.prefix / REPO.name / "_tags" / "broken"
    torn.write_text("{")
    assert store.tag_records(REPO) == {"1.0": one, "2.0": two}
    assert list(store.tag_records(REPO)) == ["1.0", "2.0"]
    store.untag(REPO, "1.0")
    store.untag(REPO, "1.0")  # already gone: fine
    assert store.tag_records(REPO) == {"2.0": two}
    assert store.read_tag(REPO, "1.0") is None


def test_a_stale_fill_is_taken_over_with_the_bytes_it_wrote(tmp_path):
    import os

    store = ContentStore(tmp_path)
    data = b"written by an instance that died, then by the one that took over"
    digest = _digest(data)
    dead = store.claim_fill(digest)
    dead.write(data[:20])
    dead.announce_size(len(data))
    assert store.take_over_fill(digest, stale_seconds=30) is None  # its heartbeat is fresh
    old = time.time() - 100
    os.utime(store.partial_path(digest), (old, old))
    resumed = store.take_over_fill(digest, stale_seconds=30)
    assert resumed is not None and resumed.size == 20
    assert store.take_over_fill(digest, stale_seconds=30) is None  # touched: one winner
    assert store.partial_size(digest) == len(data)  # followers still know the size
    resumed.hash_existing()
    resumed.write(data[20:])
    resumed.commit()
    assert store.read_blob(digest) == data
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_taken_over_fill_whose_bytes_are_wrong_does_not_verify(tmp_path):
    import os

    store = ContentStore(tmp_path)
    data = b"the right bytes of a blob"
    digest = _digest(data)
    dead = store.claim_fill(digest)
    dead.write(b"THE WRONG")  # e.g. a node that died with its writes half flushed
    old = time.time() - 100
    os.utime(store.partial_path(digest), (old, old))
    resumed = store.take_over_fill(digest, stale_seconds=30)
    assert resumed is not None
    resumed.hash_existing()
    resumed.write(data[resumed.size :])
    with pytest.raises(DigestMismatch):
        resumed.commit()
    assert store.blob_size(digest) is None
    assert list((tmp_path / "tmp").iterdir()) == []


def test_one_instance_claims_a_conversion_and_a_stale_claim_is_broken(tmp_path):
    store = ContentStore(tmp_path)
    source = _digest(b"image manifest")
    leftover = store.conversion_output_path("1", source)
    leftover.write_bytes(b"half a SIF a dead converter wrote")

    claim = store.claim_conversion("1", source)

    assert claim is not None and store.conversion_claimed("1", source)
    assert not leftover.exists()  # whoever holds the claim starts clean
    assert store.claim_conversion("1", source) is None  # exclusive
    assert store.claim_conversion("2", source) is not None  # another converter version
    assert not store.break_stale_conversion_claim("1", source, stale_seconds=60)
    old = time.time() - 120
    os.utime(claim, (old, old))
    assert store.break_stale_conversion_claim("1", source, stale_seconds=60)
    assert not store.conversion_claimed("1", source)
    assert store.claim_conversion("1", source) is not None
    store.release_conversion("1", source)
    assert not store.conversion_claimed("1", source)


def test_conversion_records_and_refusals(tmp_path):
    store = ContentStore(tmp_path)
    source, sif = _digest(b"image"), _digest(b"sif manifest")
    assert store.read_conversion("1", source) is None
    store.write_conversion_refusal("1", source, "image x: layer 1 of 1: bad")
    message, at = store.read_conversion_refusal("1", source) or ("", 0.0)
    assert message == "image x: layer 1 of 1: bad" and abs(at - time.time()) < 60
    store.write_conversion("1", source, sif)
    assert store.read_conversion("1", source) == sif
    assert store.read_conversion("2", source) is None
    assert store.read_conversion_refusal("1", source) is None  # converted since
    (tmp_path / "conversions" / "1" / source.hex).write_text('{"manifest": "sha256:zz"}')
    assert store.read_conversion("1", source) is None  # torn or foreign: converted again


def test_put_file_moves_a_finished_file_into_place_read_only(tmp_path):
    store = ContentStore(tmp_path)
    data = b"a SIF"
    path = store.temp_path("sif")
    path.write_bytes(data)
    assert store.put_file(_digest(data), path)
    assert store.read_blob(_digest(data)) == data and not path.exists()
    assert store.blob_path(_digest(data)).stat().st_mode & 0o777 == 0o444
    again = store.temp_path("sif")
    again.write_bytes(data)
    assert not store.put_file(_digest(data), again) and not again.exists()


def test_directories_another_node_is_making_are_waited_for(tmp_path, monkeypatch):
    """GlusterFS can answer "exists" to `mkdir` for a directory another node just made
    while a lookup, or a rename into it, still answers "no such file" (both seen in the
    two-node herd test): the store's writes try again rather than fail the pull with a
    500."""
    from mirror.cache import dirs

    store = ContentStore(tmp_path / "cache")
    real_makedirs = os.makedirs
    lagging = {"answers": 2}

    def makedirs_on_a_lagging_filesystem(path, exist_ok=False):
        if lagging["answers"]:
            lagging["answers"] -= 1
            raise FileExistsError(17, "File exists", str(path))
        real_makedirs(path, exist_ok=exist_ok)

    real_rename = os.rename

    def rename_on_a_lagging_filesystem(source, target):
        if lagging["renames"]:  # the directory made a moment ago is not there yet
            lagging["renames"] -= 1
            raise FileNotFoundError(2, "No such file or directory", str(source))
        real_rename(source, target)

    lagging["renames"] = 2
    monkeypatch.setattr(dirs.os, "makedirs", makedirs_on_a_lagging_filesystem)
    monkeypatch.setattr(dirs.os, "rename", rename_on_a_lagging_filesystem)
    repo = Repository("up.test", "herd/image")
    digest = Digest("a" * 64)
    store.link_blob(repo, digest)
    assert store.blob_linked(repo, digest) and lagging == {"answers": 0, "renames": 0}
    data = b"blob bytes"
    lagging["renames"] = 1
    assert store.put_bytes(Digest(hashlib.sha256(data).hexdigest()), data)
    assert store.read_blob(Digest(hashlib.sha256(data).hexdigest())) == data
    (tmp_path / "cache" / "repositories" / "taken").write_text("a file, not a directory")
    with pytest.raises(NotADirectoryError):  # a real conflict is not waited for
        store.link_blob(Repository("taken", "x"), digest)
