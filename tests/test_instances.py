"""Several `mirror serve` processes over one cache root: one upstream GET for concurrent
misses across processes, and a process killed mid-fill is taken over by another whose
clients still complete correctly. Run on a local directory and on a real cluster
filesystem: one GlusterFS volume mounted twice, one proxy per mount, like two nodes."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.faulty import FaultyUpstream


@pytest.fixture
def slow_upstream():
    # ~2 MiB at 256 KiB every 0.25 s: a fill takes about 2 s
    server = FaultyUpstream("slow", slow_chunk=256 * 1024, slow_interval=0.25).start()
    yield server
    server.stop()


def _pair(make_proxy, server, cache_roots):
    upstreams = {"f": {"url": server.url, "prefix": "f.test", "default": True}}
    # Allow for the ~1 s attribute lag of a network filesystem in the heartbeat.
    first = make_proxy(upstreams, name="node-a", root=str(cache_roots[0]), fill_stale_seconds=4)
    second = make_proxy(upstreams, name="node-b", root=str(cache_roots[1]), fill_stale_seconds=4)
    return first, second


def _download(url: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=60) as response:
            for chunk in response.iter_content(256 * 1024):
                digest.update(chunk)
            return response.status_code, "sha256:" + digest.hexdigest()
    except requests.RequestException as exc:
        return 0, repr(exc)


def test_concurrent_misses_across_processes_cost_one_upstream_request(
    make_proxy, slow_upstream, cache_roots
):
    first, second = _pair(make_proxy, slow_upstream, cache_roots)
    urls = [proxy.url + slow_upstream.layer_path for proxy in (first, second) * 8]
    with ThreadPoolExecutor(len(urls)) as pool:
        results = list(pool.map(_download, urls))
    assert results == [(200, slow_upstream.layer_digest)] * len(urls)
    # every method counts: followers on either instance rely on the one fill's GET
    assert slow_upstream.count(path_contains="/blobs/sha256") == 1
    assert slow_upstream.count("GET", "/blobs/sha256") == 1
    assert first.wait_stored(slow_upstream.layer_digest) == slow_upstream.layer_size
    assert first.temp_files() == []


def _kill_the_filler_mid_fill(first, second, server: FaultyUpstream) -> None:
    """Node A claims the fill, node B's clients follow it, A is SIGKILLed: B takes the
    fill over and its clients complete with verified bytes; nothing is left in tmp/."""
    with ThreadPoolExecutor(4) as pool:
        filler = pool.submit(_download, first.url + server.layer_path)
        time.sleep(0.6)
        followers = [pool.submit(_download, second.url + server.layer_path) for _ in range(3)]
        time.sleep(0.4)
        first._process.kill()  # SIGKILL, mid-fill
        results = [f.result() for f in followers]
        filler.result()
    assert results == [(200, server.layer_digest)] * 3
    assert second.wait_stored(server.layer_digest) == server.layer_size
    # only verified content under final paths; the dead fill's leftovers are gone
    for hex_digest in second.stored_blobs():
        path = second.cache_root / "blobs" / "sha256" / hex_digest[:2] / hex_digest
        assert hashlib.sha256(path.read_bytes()).hexdigest() == hex_digest
    assert second.temp_files() == []
    assert "taking over the fill" in second.log()


def _resumed_at(server: FaultyUpstream) -> int:
    """Where the second (takeover) GET of the layer asked to start."""
    first_get, takeover = server.layer_transfers
    assert first_get.range is None and takeover.range is not None
    start = int(takeover.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= first_get.sent  # after bytes the dead filler had received
    return start


def test_a_killed_filler_is_taken_over_where_its_partial_file_ended(
    make_proxy, slow_upstream, cache_roots
):
    first, second = _pair(make_proxy, slow_upstream, cache_roots)
    _kill_the_filler_mid_fill(first, second, slow_upstream)
    start = _resumed_at(slow_upstream)
    assert f"at byte {start}" in second.log()
    first_get, takeover = slow_upstream.layer_transfers
    assert takeover.sent == slow_upstream.layer_size - start
    # about one blob in all: plus what reached the dead filler but not its partial file
    # (a chunk or two in its socket or worker when it was killed)
    sent = first_get.sent + takeover.sent
    assert sent <= slow_upstream.layer_size + 2 * slow_upstream.slow_chunk


def test_a_filler_stopped_by_sigterm_leaves_its_fill_to_the_instance_following_it(
    make_proxy, cache_roots
):
    """A graceful stop must not delete a partial file another instance is following: node A
    is stopped (SIGTERM, a short grace) mid-fill, and node B takes the fill over where A's
    file ended, not from scratch."""
    with FaultyUpstream("slow", slow_chunk=64 * 1024, slow_interval=0.2) as server:  # ~7 s
        upstreams = {"f": {"url": server.url, "prefix": "f.test", "default": True}}
        first = make_proxy(
            upstreams,
            name="node-a",
            root=str(cache_roots[0]),
            fill_stale_seconds=4,
            server={"shutdown_grace_seconds": 0.5},
        )
        second = make_proxy(
            upstreams, name="node-b", root=str(cache_roots[1]), fill_stale_seconds=4
        )
        with ThreadPoolExecutor(4) as pool:
            pool.submit(_download, first.url + server.layer_path)
            time.sleep(1.0)
            followers = [pool.submit(_download, second.url + server.layer_path) for _ in range(3)]
            time.sleep(0.5)
            assert first.pid is not None and first._process is not None
            os.kill(first.pid, signal.SIGTERM)
            assert first._process.wait(timeout=30) == 0
            results = [f.result() for f in followers]
        assert results == [(200, server.layer_digest)] * 3
        start = _resumed_at(server)
        assert f"at byte {start}" in second.log()
        assert second.wait_stored(server.layer_digest) == server.layer_size
        assert second.temp_files() == []
        assert "left the fill of " + server.layer_digest in first.log()
        assert "Traceback" not in first.log()


def test_a_takeover_from_an_upstream_that_ignores_range_fetches_the_whole_blob(
    make_proxy, cache_roots
):
    with FaultyUpstream(
        "slow", slow_chunk=256 * 1024, slow_interval=0.25, ignore_range=True
    ) as server:
        first, second = _pair(make_proxy, server, cache_roots)
        _kill_the_filler_mid_fill(first, second, server)
        _resumed_at(server)
        assert server.layer_transfers[1].sent == server.layer_size
        assert "ignored the Range" in second.log()


def test_a_range_on_another_instances_fill_is_answered_as_its_bytes_arrive(make_proxy, cache_roots):
    with FaultyUpstream("slow", slow_chunk=64 * 1024, slow_interval=0.2) as server:  # ~7 s
        first, second = _pair(make_proxy, server, cache_roots)
        with ThreadPoolExecutor(1) as pool:
            filler = pool.submit(_download, first.url + server.layer_path)
            deadline = time.monotonic() + 20
            while not list((first.cache_root / "tmp").glob("*.size")):  # A fills it
                assert time.monotonic() < deadline, "node A never started the fill"
                time.sleep(0.05)
            response = requests.get(
                second.url + server.layer_path, headers={"Range": "bytes=0-99"}, timeout=30
            )
            assert response.status_code == 206 and response.content == server.layer[:100]
            [transfer] = server.layer_transfers
            assert transfer.sent < server.layer_size  # the fill was still running
            assert filler.result() == (200, server.layer_digest)
        assert server.count(path_contains="/blobs/") == 1


def test_workers_share_the_port_and_stop_together(tmp_path, upstream, seeded):
    from tests.conftest import upstream_entry
    from tests.support.proxy import ProxyProcess, proxy_config

    config = proxy_config(tmp_path, {"u": upstream_entry(upstream.url)})
    proxy = ProxyProcess(tmp_path / "w", config, args=("--workers", "2"))
    with proxy:
        children_file = f"/proc/{proxy.pid}/task/{proxy.pid}/children"
        children = [int(pid) for pid in open(children_file).read().split()]
        image = seeded["tools/alpha:1.0"]
        deadline = time.monotonic() + 20  # the second worker may still be starting
        while not all(
            f"mirror-worker-{n} mirror.proxy.lifecycle: listening" in proxy.log() for n in (0, 1)
        ):
            assert time.monotonic() < deadline, "one worker never listened"
            time.sleep(0.05)
        for _ in range(10):
            response = requests.get(
                f"{proxy.url}/v2/tools/alpha/manifests/1.0",
                headers={"Accept": image.media_type},
                timeout=10,
            )
            assert response.content == image.manifest
    time.sleep(0.5)
    import os

    alive = [
        pid
        for pid in children
        if os.path.exists(f"/proc/{pid}")
        and "Z" not in open(f"/proc/{pid}/stat").read().split(")")[1].split()[0]
    ]
    assert alive == []
