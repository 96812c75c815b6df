"""A cache store that refuses writes (here: a full tmpfs) never fails a pull: the content
is streamed and verified from the upstream without being cached, cached content is still
served, nothing is left in tmp/, the log says once which filesystem refused and why, and
the next miss is cached again once space is freed. EDQUOT and EIO take the same path as
ENOSPC in the code; only ENOSPC can be produced here (a tmpfs has no quota or I/O errors).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from mirror.cache.refusals import StoreRefusals, is_refusal, mount_point
from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support import oci
from tests.support.faulty import FaultyUpstream
from tests.support.proxy import proxy_config, run_mirror, toml_text
from tests.test_unsized_blobs import BLOB, BLOB_PATH, chunked_upstream  # noqa: F401 (fixture)

ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}
STORE_SIZE = 8 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path):
    """A tmpfs of STORE_SIZE bytes of its own, unmounted after the test (and after the
    proxies on it have stopped: fixtures requested later are torn down first)."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    options = f"size={STORE_SIZE}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def disk_proxy(small_fs, make_proxy, upstream, seeded):
    """A proxy over the seeded registry whose cache root is on the small tmpfs."""
    return make_proxy({"test": upstream_entry(upstream.url)}, root=str(small_fs / "cache"))


def fill_up(directory: Path, leave: int = 0) -> Path:
    """Write a filler file until only `leave` bytes are free (or none at all)."""
    filler = directory / "filler"
    stats = os.statvfs(directory)
    wanted = max(stats.f_bavail * stats.f_frsize - leave, 0) if leave else None
    written = 0
    with open(filler, "wb") as out:
        block = b"\0" * (64 * 1024)
        while wanted is None or written < wanted:
            piece = block if wanted is None else block[: wanted - written]
            try:
                written += out.write(piece)
                out.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def download(url: str, headers: dict | None = None) -> tuple[int, str, int]:
    """Status, sha256 digest and length of what a client received."""
    digest, size = hashlib.sha256(), 0
    try:
        with requests.get(url, headers=headers, stream=True, timeout=120) as response:
            for chunk in response.iter_content(256 * 1024):
                digest.update(chunk)
                size += len(chunk)
            return response.status_code, f"sha256:{digest.hexdigest()}", size
    except requests.RequestException as exc:
        return 0, repr(exc), size


def refusal_lines(proxy) -> list[str]:
    return [line for line in proxy.log().splitlines() if "ENOSPC" in line]


def assert_clean(proxy) -> None:
    """No traceback, no 'upstream failed', nothing left in tmp/."""
    log = proxy.log()
    assert "Traceback" not in log and "never retrieved" not in log
    assert "failed" not in log.lower(), log
    assert proxy.temp_files() == []


def test_blob_larger_than_free_space_is_served_verified_and_not_cached(disk_proxy, seeded):
    image, blob = seeded["big/blob:1.0"], seeded.big_blob
    assert blob.size > STORE_SIZE
    url = f"{disk_proxy.url}/v2/{image.repository}/blobs/{blob.digest}"
    assert download(url) == (200, blob.digest, blob.size)
    assert blob.digest.split(":")[1] not in disk_proxy.stored_blobs()
    assert_clean(disk_proxy)
    [line] = refusal_lines(disk_proxy)
    assert str(disk_proxy.cache_root) in line and "No space left on device" in line
    # the access log says where the bytes came from
    log = disk_proxy.wait_log(f'{blob.digest}" 200 ')  # written once the response is sent
    [logged] = [line for line in log.splitlines() if f'{blob.digest}" 200 ' in line]
    assert logged.endswith(f" 200 {blob.size} {logged.split()[-3]} pass-through test")


def test_concurrent_clients_of_a_blob_the_store_refuses_all_get_it(disk_proxy, seeded):
    image, blob = seeded["big/blob:1.0"], seeded.big_blob
    url = f"{disk_proxy.url}/v2/{image.repository}/blobs/{blob.digest}"
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: download(url), range(5)))
    assert results == [(200, blob.digest, blob.size)] * 5
    assert disk_proxy.stored_blobs() == {}
    assert_clean(disk_proxy)
    assert len(refusal_lines(disk_proxy)) == 1


def test_full_store_still_serves_uncached_manifests_and_blobs(disk_proxy, small_fs, seeded):
    fill_up(small_fs)
    image = seeded["tools/alpha:1.0"]
    response = requests.get(
        f"{disk_proxy.url}/v2/{image.repository}/manifests/1.0", headers=ACCEPT, timeout=30
    )
    assert response.status_code == 200 and response.content == image.manifest
    for layer in image.blobs:
        url = f"{disk_proxy.url}/v2/{image.repository}/blobs/{layer['digest']}"
        assert download(url) == (200, layer["digest"], layer["size"])
    assert disk_proxy.stored_blobs() == {}
    assert_clean(disk_proxy)
    [line] = refusal_lines(disk_proxy)
    assert str(disk_proxy.cache_root) in line and str(small_fs) in line


def test_cached_content_is_served_while_the_store_is_full(small_fs, make_proxy, upstream, seeded):
    # Tags expire at once, so every pull also revalidates (and fails to record it).
    proxy = make_proxy(
        {"test": upstream_entry(upstream.url)}, root=str(small_fs / "cache"), tag_ttl_seconds=0
    )
    image = seeded["tools/beta:2.0"]
    manifest_url = f"{proxy.url}/v2/{image.repository}/manifests/2.0"
    blob_urls = [f"{proxy.url}/v2/{image.repository}/blobs/{b['digest']}" for b in image.blobs]
    assert requests.get(manifest_url, headers=ACCEPT, timeout=30).status_code == 200
    for url, layer in zip(blob_urls, image.blobs):
        assert download(url) == (200, layer["digest"], layer["size"])
        proxy.wait_stored(layer["digest"])
    fill_up(small_fs)
    since = upstream.mark()
    for _ in range(2):
        response = requests.get(manifest_url, headers=ACCEPT, timeout=30)
        assert response.status_code == 200 and response.content == image.manifest
        for url, layer in zip(blob_urls, image.blobs):
            assert download(url) == (200, layer["digest"], layer["size"])
    assert upstream.count("GET", since=since) == 0  # only the tag's HEAD
    assert_clean(proxy)


def test_store_takes_misses_again_once_space_is_freed(disk_proxy, small_fs, seeded):
    filler = fill_up(small_fs)
    image = seeded["tools/alpha:1.0"]
    layer = image.layers[0]
    url = f"{disk_proxy.url}/v2/{image.repository}/blobs/{layer['digest']}"
    assert download(url) == (200, layer["digest"], layer["size"])
    assert disk_proxy.stored_blobs() == {}
    filler.unlink()
    assert download(url) == (200, layer["digest"], layer["size"])
    assert disk_proxy.wait_stored(layer["digest"]) == layer["size"]
    assert "takes writes again" in disk_proxy.log()
    assert_clean(disk_proxy)


@pytest.fixture
def slow_upstream():
    # ~2 MiB at 128 KiB every 0.1 s: clients are mid-stream when the store fills up
    server = FaultyUpstream("slow", slow_chunk=128 * 1024, slow_interval=0.1).start()
    yield server
    server.stop()


def _slow_proxy(make_proxy, server, root: Path, name: str = "proxy"):
    upstreams = {"f": {"url": server.url, "prefix": "f.test", "default": True}}
    return make_proxy(upstreams, name=name, root=str(root), fill_stale_seconds=2)


def test_clients_waiting_on_a_fill_the_store_refuses_part_way_get_the_whole_blob(
    small_fs, make_proxy, slow_upstream
):
    proxy = _slow_proxy(make_proxy, slow_upstream, small_fs / "cache")
    fill_up(small_fs, leave=768 * 1024)
    url = proxy.url + slow_upstream.layer_path
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: download(url), range(3)))
    expected = (200, slow_upstream.layer_digest, slow_upstream.layer_size)
    assert results == [expected] * 3
    assert proxy.stored_blobs() == {}
    assert_clean(proxy)
    assert len(refusal_lines(proxy)) == 1
    # Each client went on from the upstream where it was, with a Range, instead of having
    # the whole blob sent again: the fill's GET, then for each client only the rest.
    fill, *switched = slow_upstream.layer_transfers
    assert fill.range is None and len(switched) == 3
    for transfer in switched:
        assert transfer.range is not None and transfer.range.startswith("bytes="), switched
        start = int(transfer.range.removeprefix("bytes=").rstrip("-"))
        assert 0 < start and transfer.sent == slow_upstream.layer_size - start, switched


def test_instances_following_a_fill_the_shared_store_refuses_get_the_whole_blob(
    small_fs, make_proxy, slow_upstream
):
    filling = _slow_proxy(make_proxy, slow_upstream, small_fs / "cache", "node-a")
    following = _slow_proxy(make_proxy, slow_upstream, small_fs / "cache", "node-b")
    fill_up(small_fs, leave=768 * 1024)
    expected = (200, slow_upstream.layer_digest, slow_upstream.layer_size)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(download, filling.url + slow_upstream.layer_path)
        time.sleep(0.3)  # node-a has claimed the fill: node-b follows its partial file
        others = [pool.submit(download, following.url + slow_upstream.layer_path) for _ in range(2)]
        assert [first.result()] + [f.result() for f in others] == [expected] * 3
    assert filling.stored_blobs() == {}
    assert_clean(filling)
    assert_clean(following)


def test_a_range_of_a_blob_the_store_refuses_is_served(disk_proxy, seeded):
    image, blob = seeded["big/blob:1.0"], seeded.big_blob
    head = next(blob.chunks())
    url = f"{disk_proxy.url}/v2/{image.repository}/blobs/{blob.digest}"
    response = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=120)
    assert response.status_code == 206 and response.content == head[100:200]
    tail = b"".join(itertools.islice(blob.chunks(), 0, None))[-100:]
    response = requests.get(url, headers={"Range": "bytes=-100"}, timeout=120)
    assert response.status_code == 206 and response.content == tail
    assert disk_proxy.stored_blobs() == {}
    assert_clean(disk_proxy)


def test_a_blob_without_content_length_is_served_whole_by_a_full_store(
    small_fs, make_proxy, request
):
    chunked = request.getfixturevalue("chunked_upstream")
    proxy = make_proxy(
        {"u": {"url": chunked, "prefix": "c.test", "default": True}},
        root=str(small_fs / "cache"),
    )
    fill_up(small_fs)
    response = requests.get(proxy.url + BLOB_PATH, timeout=30)
    assert response.status_code == 200 and response.content == BLOB
    assert proxy.stored_blobs() == {}
    assert_clean(proxy)


def test_prefetch_into_a_full_store_reports_it_instead_of_pretending(
    small_fs, tmp_path, upstream, seeded
):
    config = proxy_config(tmp_path, {"u": upstream_entry(upstream.url)})
    config["cache"]["root"] = str(small_fs / "cache")
    path = tmp_path / "mirror.toml"
    path.write_text(toml_text(config))
    (small_fs / "cache").mkdir()
    fill_up(small_fs)
    result = run_mirror(path, "prefetch", f"{UPSTREAM_PREFIX}/tools/alpha:1.0")
    assert result.returncode != 0
    assert "ENOSPC" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS])
def test_full_over_quota_failing_and_read_only_filesystems_are_refusals(code):
    assert is_refusal(OSError(code, os.strerror(code)))


def test_other_errors_are_not_refusals():
    assert not is_refusal(FileNotFoundError(errno.ENOENT, "gone"))
    assert not is_refusal(PermissionError(errno.EACCES, "denied"))
    assert not is_refusal(ValueError("no"))


def test_refusals_are_logged_once_a_minute_and_recovery_once(tmp_path, caplog):
    now = [1000.0]
    refusals = StoreRefusals(tmp_path, clock=lambda: now[0])
    full = OSError(errno.ENOSPC, "No space left on device")
    caplog.set_level(logging.INFO, logger="mirror.cache.refusals")
    for _ in range(5):
        refusals.refused(full, "a fill")
        refusals.accepted()
        now[0] += 10
    now[0] += 60
    refusals.refused(full, "a fill")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "ENOSPC" in lines[0] and str(tmp_path) in lines[0] and "a fill" in lines[0]
    assert "takes writes again" in lines[1]
    assert "4 more refused since the last line" in lines[2]


def test_the_mount_point_is_where_the_device_changes(small_fs):
    (small_fs / "cache" / "tmp").mkdir(parents=True)
    assert mount_point(small_fs / "cache" / "tmp") == small_fs
    assert mount_point(Path("/")) == Path("/")
