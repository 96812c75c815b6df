"""Upstream faults a real registry cannot produce, from a fault-injecting upstream: none may
leave anything in the store, and no client may receive a response that looks complete."""

from __future__ import annotations

import http.client
import time

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


@pytest.mark.parametrize("mode,expected", [("status500", 502), ("status429", 502)])
def test_error_statuses_are_retried_then_reported(make_proxy, faulty, mode, expected):
    server = faulty(mode)
    proxy = _proxy_for(make_proxy, server)  # retries = 2 in the test config
    response = requests.get(proxy.url + server.layer_path, timeout=30)
    assert response.status_code == expected
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "status" not in response.text.lower() or "upstream" in response.text
    assert server.count("GET", "/blobs/sha256") == 3
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
    assert "stalled" in proxy.log()
