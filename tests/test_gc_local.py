"""`mirror gc` and the local namespace: abandoned uploads and unreferenced blobs go on
every run; local images are the site's originals and are never evicted."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from mirror.cache.store import ContentStore
from mirror.reference import Digest, Repository
from tests.support.accounts import write_htpasswd
from tests.support.local_images import (
    backdate,
    push_image,
    push_index,
    start_upload,
    upload_blob,
)
from tests.support.proxy import UPSTREAM_PREFIX, proxy_config, run_mirror, toml_text

DAY = 86400.0
TOOL = Repository("local", "alice/tool")
OTHER = Repository("local", "physics/app")
CACHED = Repository(UPSTREAM_PREFIX, "library/base")


def _config(tmp_path: Path, **cache) -> Path:
    """A site with `[local] prefix = "local"` and a 24-hour upload TTL."""
    upstream = {"url": "http://127.0.0.1:9", "prefix": UPSTREAM_PREFIX, "default": True}
    config = proxy_config(tmp_path, {"u": upstream}, **cache)
    config["auth"] = {"htpasswd": str(write_htpasswd(tmp_path / "htpasswd", {"alice": "pw"}))}
    config["local"] = {"prefix": "local", "upload_ttl_hours": 24}
    path = tmp_path / "mirror.toml"
    path.write_text(toml_text(config))
    return path


def _stored(store: ContentStore) -> set[str]:
    return {blob.digest.hex for blob in store.blobs()}


def _gc(path: Path, *args: str):
    result = run_mirror(path, "gc", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_run_removes_uploads_abandoned_longer_than_the_ttl(tmp_path):
    path = _config(tmp_path)
    store = ContentStore(tmp_path / "cache")
    now = time.time()
    old = start_upload(store, TOOL, b"x" * 3000, now - 2 * DAY)
    torn = start_upload(store, TOOL, b"y" * 1000, now - 3 * DAY)
    torn_dir = store.upload_data_path(torn).parent
    (torn_dir / "session").unlink()  # torn: a crash, or a half-removed session
    os.utime(torn_dir, (now - 3 * DAY, now - 3 * DAY))
    fresh = start_upload(store, TOOL, b"z" * 500, now - 3600)

    dry = _gc(path, "--dry-run")
    assert "would remove 2 abandoned uploads (3.9 KiB)" in dry
    assert store.upload_ids() == sorted([old, torn, fresh])

    out = _gc(path)  # no --max-size: the cleanup runs all the same

    assert "removed 2 abandoned uploads (3.9 KiB)" in out
    assert store.upload_ids() == [fresh]
    assert store.read_upload(fresh).size == 500


def test_blobs_no_local_manifest_references_are_released_after_the_ttl(tmp_path):
    path = _config(tmp_path)
    store = ContentStore(tmp_path / "cache")
    now = time.time()
    shared_with_cache = b"base layer, also in a cached upstream image"
    kept = push_image(store, TOOL, "1.0", [b"tool 1.0", b"common"], "alice", now - 9 * DAY)
    deleted = push_image(
        store, TOOL, "2.0", [b"tool 2.0", b"common", shared_with_cache], "alice", now - 8 * DAY
    )
    push_image(store, CACHED, "1", [shared_with_cache], None, now - 8 * DAY)
    lone = upload_blob(store, OTHER, b"pushed, its manifest never came", "physics")
    backdate(store, now - 2 * DAY)
    pending = upload_blob(store, OTHER, b"pushed a moment ago", "physics")
    # A user deletes tool:2.0: its tag and manifest link go, its blob links stay.
    store.untag(TOOL, "2.0")
    store.unlink_manifest(TOOL, deleted.digest)
    before = _stored(store)

    dry = _gc(path, "--dry-run")
    assert "would unlink 3 local blobs no manifest references" in dry
    assert _stored(store) == before

    out = _gc(path)

    assert "unlinked 3 local blobs no manifest references" in out
    stored = _stored(store)
    assert kept.held <= stored  # tool:1.0, with the layer it shared with 2.0
    only_deleted = {text[7:] for text in deleted.blobs} - kept.held
    assert only_deleted & stored == {_hex(shared_with_cache)}  # the cached image holds it
    assert not store.blob_linked(TOOL, _digest(b"tool 2.0"))
    assert not store.blob_linked(TOOL, _digest(shared_with_cache))
    assert store.blob_linked(TOOL, _digest(b"common"))
    assert deleted.digest.hex not in stored  # the manifest itself: nothing links it
    assert lone.hex not in stored and not store.blob_linked(OTHER, lone)
    assert pending.hex in stored and store.blob_linked(OTHER, pending)
    assert "3 blobs nothing links or references" in out


def test_max_size_zero_evicts_cached_images_and_keeps_every_local_one(tmp_path):
    path = _config(tmp_path)
    store = ContentStore(tmp_path / "cache")
    now = time.time()
    common = b"a layer both a local and a cached image hold"
    tagged = push_image(store, TOOL, "1.0", [b"tool", common], "alice", now - 30 * DAY)
    amd = push_image(store, OTHER, None, [b"app amd64"], "bob", now - 30 * DAY)
    arm = push_image(store, OTHER, None, [b"app arm64"], "bob", now - 30 * DAY)
    index = push_index(store, OTHER, "2", [(amd, "linux/amd64"), (arm, "linux/arm64")], "bob", now)
    signature = push_image(
        store,
        TOOL,
        None,
        [b"a cosign signature"],
        "alice",
        now - 30 * DAY,
        subject=tagged,
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
    )
    by_digest = push_image(store, TOOL, None, [b"pushed by digest"], "alice", now - 30 * DAY)
    cached = push_image(store, CACHED, "1", [b"cached only", common], None, now - 30 * DAY)
    backdate(store, now - 30 * DAY)
    pending = upload_blob(store, OTHER, b"manifest still to come", "bob")
    local_held = set().union(
        *(image.held for image in (tagged, amd, arm, index, signature, by_digest))
    )

    out = _gc(path, "--max-size", "0")

    assert out.splitlines()[0] == f"evicted {CACHED}:1"
    assert len([line for line in out.splitlines() if line.startswith("evicted")]) == 1
    stored = _stored(store)
    assert local_held | {pending.hex} <= stored
    assert cached.digest.hex not in stored and _hex(b"cached only") not in stored
    assert _hex(common) in stored
    assert store.read_tag(TOOL, "1.0") is not None and store.read_tag(OTHER, "2") is not None
    assert store.referrers(TOOL, tagged.digest)[0]["digest"] == str(signature.digest)
    assert "still above 0 B: the rest is local images" in out


def test_pins_name_local_images_and_a_pin_without_a_namespace_is_refused(tmp_path):
    store = ContentStore(tmp_path / "cache")
    push_image(store, TOOL, "1.0", [b"tool"], "alice", time.time())
    path = _config(tmp_path, pins=["local/alice/tool:1.0", "local/physics/app"])
    assert "freed" in _gc(path, "--max-size", "0")

    bad = _config(tmp_path, pins=["local/tool:1.0"])
    result = run_mirror(bad, "gc")
    assert result.returncode == 2
    assert "cache.pins: 'local/tool:1.0'" in result.stderr
    assert "local/<user or group>/<name>" in result.stderr


def _hex(content: bytes) -> str:
    return _digest(content).hex


def _digest(content: bytes) -> Digest:
    return Digest(hashlib.sha256(content).hexdigest())
