"""Upstream faults a real registry cannot produce, from a fault-injecting upstream: none may
leave anything in the store, and no client may receive a response that looks complete."""

from __future__ import annotations

import http.client
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.faulty import FaultyUpstream


@pytest.fixture
def faulty():
    servers = []

    def make(mode: str, **kwargs) -> FaultyUpstream:
        server = FaultyUpstream(mode, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def _proxy_for(make_proxy, server: FaultyUpstream, **client):
    proxy = make_proxy({"faulty": {"url": server.url, "prefix": "faulty.test", "default": True}})
    return proxy


def _raw_blob_get(proxy, path: str) -> tuple[int, int, int | None]:
    """(status, bytes received, Content-Length) without raising on a cut connection."""
    connection = http.client.HTTPConnection(proxy.host, timeout=30)
    received = 0
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        length = response.getheader("Content-Length")
        try:
            while chunk := response.read1(65536):
                received += len(chunk)
        except (http.client.IncompleteRead, ConnectionError) as exc:
            received += len(getattr(exc, "partial", b""))
        return response.status, received, int(length) if length else None
    finally:
        connection.close()


@pytest.mark.parametrize("mode", ["truncated", "wrong_digest", "reset"])
def test_broken_body_aborts_the_response_and_stores_nothing(make_proxy, faulty, mode):
    server = faulty(mode)
    proxy = _proxy_for(make_proxy, server)
    status, received, length = _raw_blob_get(proxy, server.layer_path)
    # Either an error before any byte, or a response cut short of its Content-Length.
    assert status >= 500 or (
        status == 200 and length == server.layer_size and received < server.layer_size
    )
    time.sleep(0.2)
    assert server.layer_digest.split(":")[1] not in proxy.stored_blobs()
    assert proxy.temp_files() == []


@pytest.mark.parametrize("mode,attempts", [("status500", 1), ("status429", 3)])
def test_error_statuses_are_reported_and_only_unwell_ones_retried(
    make_proxy, faulty, mode, attempts
):
    """429 says the upstream is overloaded: retried. A 500 answers this request only (a
    client can provoke one): reported at once."""
    server = faulty(mode)
    proxy = _proxy_for(make_proxy, server)  # retries = 2 in the test config
    response = requests.get(proxy.url + server.layer_path, timeout=30)
    assert response.status_code == 502
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "status" not in response.text.lower() or "upstream" in response.text
    assert server.count("GET", "/blobs/sha256") == attempts
    assert proxy.stored_blobs() == {} and proxy.temp_files() == []


def test_retry_after_a_transient_error_succeeds(make_proxy, faulty):
    server = faulty("status429", fail_times=1)
    proxy = _proxy_for(make_proxy, server)
    response = requests.get(proxy.url + server.layer_path, timeout=30)
    assert response.status_code == 200 and len(response.content) == server.layer_size
    assert server.count("GET", "/blobs/sha256") == 2
    assert proxy.wait_stored(server.layer_digest) == server.layer_size


def test_hung_upstream_times_out_with_504(make_proxy, faulty):
    server = faulty("hang")
    proxy = _proxy_for(make_proxy, server)  # read timeout 5 s, 2 retries
    started = time.monotonic()
    response = requests.get(proxy.url + server.layer_path, timeout=60)
    assert response.status_code == 504
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert time.monotonic() - started < 30
    assert proxy.stored_blobs() == {} and proxy.temp_files() == []


def test_first_bytes_arrive_before_the_upstream_finishes(make_proxy, faulty):
    """Streaming on a miss: with an upstream that drips, the client already holds bytes
    while the upstream is still sending (the fill is not complete)."""
    server = faulty("slow", slow_chunk=256 * 1024, slow_interval=0.3)
    proxy = _proxy_for(make_proxy, server)
    with requests.get(proxy.url + server.layer_path, stream=True, timeout=30) as response:
        assert response.status_code == 200
        first = next(response.iter_content(64 * 1024))
        assert first
        assert server.layer_transfers[0].sent < server.layer_size
        assert server.layer_digest.split(":")[1] not in proxy.stored_blobs()
        rest = b"".join(response.iter_content(1 << 20))
    assert len(first) + len(rest) == server.layer_size


def test_client_hangup_does_not_abort_the_fill(make_proxy, faulty):
    server = faulty("slow", slow_chunk=512 * 1024, slow_interval=0.1)
    proxy = _proxy_for(make_proxy, server)
    with requests.get(proxy.url + server.layer_path, stream=True, timeout=30) as response:
        assert next(response.iter_content(1024))
    deadline = time.monotonic() + 20
    while server.layer_digest.split(":")[1] not in proxy.stored_blobs():
        assert time.monotonic() < deadline, "the fill was abandoned with its client"
        time.sleep(0.1)
    assert proxy.stored_blobs()[server.layer_digest.split(":")[1]] == server.layer_size
    assert server.count("GET", "/blobs/sha256") == 1


def test_a_range_on_a_miss_is_answered_as_its_bytes_arrive(make_proxy, faulty):
    """Lazy-pulling clients (eStargz, SOCI) read chunks of a cold blob: a range that ends
    before the blob's end is answered while the fill still runs; a range that ends at the
    blob's end waits for the whole blob to verify."""
    server = faulty("slow", slow_chunk=64 * 1024, slow_interval=0.2)  # ~7 s for the layer
    proxy = _proxy_for(make_proxy, server)
    url = proxy.url + server.layer_path
    response = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=30)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 0-99/{server.layer_size}"
    assert response.content == server.layer[:100]
    [transfer] = server.layer_transfers
    assert transfer.sent < server.layer_size  # the upstream was still sending
    assert server.layer_digest.split(":")[1] not in proxy.stored_blobs()
    tail = requests.get(url, headers={"Range": "bytes=-100"}, timeout=60)
    assert tail.status_code == 206 and tail.content == server.layer[-100:]
    assert server.layer_transfers[0].sent == server.layer_size
    assert proxy.wait_stored(server.layer_digest) == server.layer_size
    assert server.count(path_contains="/blobs/") == 1  # one GET served both ranges


def test_clients_joining_a_fill_ask_the_upstream_nothing(make_proxy, faulty):
    """GETs and HEADs of a blob while its fill runs rely on the fill's own GET: the upstream
    sees one request for the blob, of any method."""
    server = faulty("slow", slow_chunk=256 * 1024, slow_interval=0.2)  # ~2 s for the layer
    proxy = _proxy_for(make_proxy, server)
    url = proxy.url + server.layer_path
    with requests.get(url, stream=True, timeout=30) as first:
        assert next(first.iter_content(1024))
        assert server.layer_transfers[0].sent < server.layer_size  # the fill runs
        with ThreadPoolExecutor(16) as pool:
            heads = [pool.submit(requests.head, url, timeout=30) for _ in range(8)]
            gets = [pool.submit(requests.get, url, timeout=30) for _ in range(8)]
            assert [int(h.result().headers["Content-Length"]) for h in heads] == [
                server.layer_size
            ] * 8
            assert [g.result().content == server.layer for g in gets] == [True] * 8
        assert server.layer_transfers[0].sent == server.layer_size
    assert server.count(path_contains="/blobs/") == 1


def test_a_running_fill_is_no_licence_for_another_repository(make_proxy, faulty):
    server = faulty("slow", slow_chunk=256 * 1024, slow_interval=0.2)
    proxy = _proxy_for(make_proxy, server)
    other = f"/v2/fault/other/blobs/{server.layer_digest}"
    with requests.get(proxy.url + server.layer_path, stream=True, timeout=30) as filling:
        assert next(filling.iter_content(1024))
        for method in ("GET", "HEAD"):
            response = requests.request(method, proxy.url + other, timeout=30)
            assert response.status_code == 404, method
        assert server.layer_transfers[0].sent < server.layer_size  # still filling
        assert server.count("HEAD", "/v2/fault/other/") == 2  # its upstream was asked
        assert requests.get(proxy.url + other, timeout=30).json()["errors"][0]["code"] == (
            "BLOB_UNKNOWN"
        )


def test_a_body_that_stalls_times_out_and_stores_nothing(make_proxy, faulty):
    """The upstream stops sending mid-body: after the read timeout (5 s in the tests) the
    client's response is cut short and nothing is left in the store."""
    server = faulty("stall")
    proxy = _proxy_for(make_proxy, server)
    started = time.monotonic()
    status, received, length = _raw_blob_get(proxy, server.layer_path)
    assert status == 200 and length == server.layer_size and received < server.layer_size
    assert time.monotonic() - started < 30
    assert proxy.stored_blobs() == {} and proxy.temp_files() == []
    proxy.wait_log("stalled")
