"""Cache behaviour, asserted from the upstream registry's own access log."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import upstream_entry
from tests.support import oci
from tests.support.clients import fetch_sha256
from tests.support.seed import RegistryClient, publish_image

ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}


def test_concurrent_misses_of_one_blob_cost_one_upstream_request(proxy, upstream, seeded):
    """A herd on a cold blob costs one upstream request of any method: clients joining the
    fill rely on its GET instead of each asking the upstream (HEAD) whether the
    repository may have the blob."""
    image = seeded["big/blob:1.0"]
    blob = seeded.big_blob
    url = f"{proxy.url}/v2/{image.repository}/blobs/{blob.digest}"
    since = upstream.mark()
    clients = 24
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: fetch_sha256(url), range(clients)))
    assert results == [(200, blob.digest, blob.size)] * clients
    blob_requests = [r.method for r in upstream.requests()[since:] if blob.digest in r.path]
    assert blob_requests == ["GET"]
    assert proxy.wait_stored(blob.digest) == blob.size
    assert proxy.temp_files() == []


def test_cached_digests_never_ask_upstream_again(proxy, upstream, seeded):
    image = seeded["tools/beta:2.0"]
    paths = [f"/v2/{image.repository}/manifests/{image.digest}"] + [
        f"/v2/{image.repository}/blobs/{blob['digest']}" for blob in image.blobs
    ]
    for path in paths:
        assert requests.get(proxy.url + path, headers=ACCEPT, timeout=10).status_code == 200
    since = upstream.mark()
    for _ in range(3):
        for path in paths:
            assert requests.get(proxy.url + path, headers=ACCEPT, timeout=10).status_code == 200
    assert upstream.count(since=since) == 0


def test_tag_within_ttl_costs_zero_upstream_requests(proxy, upstream, seeded):
    image = seeded["tools/alpha:1.0"]
    url = f"{proxy.url}/v2/{image.repository}/manifests/1.0"
    assert requests.get(url, headers=ACCEPT, timeout=10).content == image.manifest
    since = upstream.mark()
    for _ in range(20):
        response = requests.get(url, headers=ACCEPT, timeout=10)
        assert response.content == image.manifest
        assert "Warning" not in response.headers
    assert upstream.count(since=since) == 0


def test_expired_tag_is_revalidated_with_one_head_and_refetched_when_moved(
    make_proxy, private_upstream
):
    client = RegistryClient(private_upstream.url)
    spec = oci.ImageConfigSpec(title="moving", version="1")
    [first] = publish_image(
        client, "moving/tag", ["stable"], spec, [oci.make_layer("m1", {"a": 10}, "A")]
    )
    proxy = make_proxy({"u": upstream_entry(private_upstream.url)}, tag_ttl_seconds=0.5)
    url = f"{proxy.url}/v2/moving/tag/manifests/stable"
    assert requests.get(url, headers=ACCEPT, timeout=10).content == first.manifest
    time.sleep(0.6)
    since = private_upstream.mark()
    assert requests.get(url, headers=ACCEPT, timeout=10).content == first.manifest
    assert [(r.method, r.path) for r in private_upstream.requests()[since:]] == [
        ("HEAD", "/v2/moving/tag/manifests/stable")
    ]
    [second] = publish_image(
        client,
        "moving/tag",
        ["stable"],
        oci.ImageConfigSpec(title="moving", version="2"),
        [oci.make_layer("m2", {"b": 10}, "B")],
    )
    client.close()
    time.sleep(0.6)
    since = private_upstream.mark()
    response = requests.get(url, headers=ACCEPT, timeout=10)
    assert response.content == second.manifest
    assert response.headers["Docker-Content-Digest"] == second.digest
    methods = [r.method for r in private_upstream.requests()[since:] if "/manifests/" in r.path]
    assert methods == ["HEAD", "GET"]


def test_upstream_down_serves_cached_tags_and_digests(make_proxy, private_upstream):
    client = RegistryClient(private_upstream.url)
    [image] = publish_image(
        client,
        "offline/img",
        ["1.0"],
        oci.ImageConfigSpec(title="offline", version="1.0"),
        [oci.make_layer("off", {"f": 5000}, "F")],
    )
    client.close()
    proxy = make_proxy({"u": upstream_entry(private_upstream.url)}, tag_ttl_seconds=0.2)
    paths = ["/v2/offline/img/manifests/1.0", f"/v2/offline/img/manifests/{image.digest}"]
    paths += [f"/v2/offline/img/blobs/{blob['digest']}" for blob in image.blobs]
    before = {p: requests.get(proxy.url + p, headers=ACCEPT, timeout=10).content for p in paths}
    private_upstream.stop()
    time.sleep(0.3)  # the tag is past its TTL: the proxy must try upstream and fall back
    for path in paths:
        response = requests.get(proxy.url + path, headers=ACCEPT, timeout=30)
        assert response.status_code == 200, path
        assert response.content == before[path]
    stale = requests.get(proxy.url + paths[0], headers=ACCEPT, timeout=30)
    assert "Revalidation Failed" in stale.headers["Warning"]
    assert "serving up.test/offline/img:1.0 stale" in proxy.log()
    missing = requests.get(proxy.url + "/v2/offline/img/manifests/2.0", headers=ACCEPT, timeout=30)
    assert missing.status_code in (502, 503, 504)
    assert missing.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_proxy_starts_and_serves_cache_with_upstream_down(make_proxy, private_upstream, tmp_path):
    client = RegistryClient(private_upstream.url)
    [image] = publish_image(
        client,
        "cold/start",
        ["1.0"],
        oci.ImageConfigSpec(title="cold", version="1.0"),
        [oci.make_layer("cold", {"f": 100}, "F")],
    )
    client.close()
    first = make_proxy({"u": upstream_entry(private_upstream.url)}, name="first")
    assert requests.get(first.url + "/v2/cold/start/manifests/1.0", headers=ACCEPT, timeout=10).ok
    first.stop()
    private_upstream.stop()
    # A second process on the same cache root, started with the upstream down.
    second = make_proxy(
        {"u": upstream_entry(private_upstream.url)},
        name="second",
        root=str(first.cache_root),
        tag_ttl_seconds=0,
    )
    response = requests.get(second.url + "/v2/cold/start/manifests/1.0", headers=ACCEPT, timeout=30)
    assert response.status_code == 200 and response.content == image.manifest


def test_blob_of_another_repository_is_not_served_without_upstream_consent(proxy, upstream, seeded):
    alpha = seeded["tools/alpha:1.0"]
    private_layer = alpha.layers[-1]  # only tools/alpha has this layer
    assert requests.get(
        f"{proxy.url}/v2/tools/alpha/blobs/{private_layer['digest']}", timeout=10
    ).ok
    since = upstream.mark()
    response = requests.get(
        f"{proxy.url}/v2/tools/beta/blobs/{private_layer['digest']}", timeout=10
    )
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    # the proxy asked tools/beta's upstream, which denied having it
    assert (
        upstream.count("HEAD", f"/v2/tools/beta/blobs/{private_layer['digest']}", since=since) == 1
    )
    head = requests.head(f"{proxy.url}/v2/tools/beta/blobs/{private_layer['digest']}", timeout=10)
    assert head.status_code == 404


def test_shared_blob_is_served_under_a_second_repository_after_upstream_confirms(
    proxy, upstream, seeded
):
    alpha, beta = seeded["tools/alpha:1.0"], seeded["tools/beta:2.0"]
    shared = alpha.layers[0]
    assert shared["digest"] in {b["digest"] for b in beta.blobs}
    assert requests.get(f"{proxy.url}/v2/tools/alpha/blobs/{shared['digest']}", timeout=10).ok
    since = upstream.mark()
    response = requests.get(f"{proxy.url}/v2/tools/beta/blobs/{shared['digest']}", timeout=10)
    assert response.status_code == 200 and response.content == alpha.blob_data[shared["digest"]]
    assert upstream.count("GET", "/blobs/", since=since) == 0
    assert upstream.count("HEAD", f"/v2/tools/beta/blobs/{shared['digest']}", since=since) == 1
