"""Offline and degraded upstreams: an offline upstream is never contacted, a failing one
stops being waited on (circuit breaker), and stale answers are bounded."""

from __future__ import annotations

import time

import requests

from tests.conftest import upstream_entry
from tests.support import oci
from tests.support.faulty import FaultyUpstream
from tests.support.seed import RegistryClient, publish_image

ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}


def _publish(registry, repository: str, tag: str):
    client = RegistryClient(registry.url)
    try:
        [image] = publish_image(
            client,
            repository,
            [tag],
            oci.ImageConfigSpec(title=repository, version=tag),
            [oci.make_layer(f"{repository}:{tag}", {"f": 4000}, "F")],
        )
    finally:
        client.close()
    return image


def _get(proxy, path: str, timeout: float = 30):
    return requests.get(proxy.url + path, headers=ACCEPT, timeout=timeout)


def test_offline_upstream_serves_the_cache_and_is_never_contacted(make_proxy, private_upstream):
    image = _publish(private_upstream, "air/gapped", "1.0")
    online = make_proxy({"u": upstream_entry(private_upstream.url)}, name="online")
    paths = ["/v2/air/gapped/manifests/1.0", f"/v2/air/gapped/manifests/{image.digest}"]
    paths += [f"/v2/air/gapped/blobs/{blob['digest']}" for blob in image.blobs]
    expected = {path: _get(online, path).content for path in paths}
    online.stop()
    offline = make_proxy(
        {"u": upstream_entry(private_upstream.url, mode="offline")},
        name="offline",
        root=str(online.cache_root),
        tag_ttl_seconds=0,
    )
    since = private_upstream.mark()
    for path in paths:
        response = _get(offline, path)
        assert response.status_code == 200 and response.content == expected[path]
        assert "Warning" not in response.headers
    missing = _get(offline, "/v2/air/gapped/manifests/2.0")
    assert missing.status_code == 503
    assert "offline" in missing.json()["errors"][0]["message"]
    other_repo = _get(offline, f"/v2/other/repo/blobs/{image.blobs[0]['digest']}")
    assert other_repo.status_code == 503  # cached, but not this repository's: not served
    assert private_upstream.count(since=since) == 0


def test_circuit_breaker_stops_waiting_on_a_failing_upstream(make_proxy):
    server = FaultyUpstream("status429").start()  # overloaded: a failure the breaker counts
    try:
        proxy = make_proxy(
            {"f": {"url": server.url, "prefix": "f.test", "default": True}},
            client={"retries": 1, "breaker_failures": 2, "breaker_cooldown_seconds": 2},
        )
        for _ in range(2):
            assert _get(proxy, server.layer_path).status_code == 502
        tried = server.count()
        assert tried == 4  # two requests, each tried twice
        started = time.monotonic()
        fast = _get(proxy, server.layer_path)
        assert fast.status_code == 503 and "keeps failing" in fast.json()["errors"][0]["message"]
        assert time.monotonic() - started < 1
        assert server.count() == tried  # the open breaker let nothing through
        server.mode = "ok"
        time.sleep(2.1)
        recovered = _get(proxy, server.layer_path)
        assert recovered.status_code == 200 and len(recovered.content) == server.layer_size
    finally:
        server.stop()


def test_stale_answers_are_bounded_by_max_stale_seconds(make_proxy, private_upstream):
    image = _publish(private_upstream, "stale/img", "1.0")
    proxy = make_proxy(
        {"u": upstream_entry(private_upstream.url)},
        tag_ttl_seconds=0.1,
        max_stale_seconds=1.5,
        client={"breaker_failures": 0},
    )
    assert _get(proxy, "/v2/stale/img/manifests/1.0").content == image.manifest
    private_upstream.stop()
    time.sleep(0.2)  # past the TTL: the proxy must ask, fail, and fall back
    stale = _get(proxy, "/v2/stale/img/manifests/1.0")
    assert stale.status_code == 200 and "Revalidation Failed" in stale.headers["Warning"]
    time.sleep(1.6)
    too_old = _get(proxy, "/v2/stale/img/manifests/1.0")
    assert too_old.status_code in (502, 503, 504)
    # by digest it is immutable: still served
    assert _get(proxy, f"/v2/stale/img/manifests/{image.digest}").status_code == 200
