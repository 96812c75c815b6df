"""The OCI distribution pull API of `mirror serve`, over plain HTTP, against a real upstream."""

from __future__ import annotations

import hashlib
import http.client
import json

import pytest
import requests

from tests.conftest import UPSTREAM_PREFIX
from tests.support import oci

ACCEPT = {"Accept": oci.ACCEPT_ALL_MANIFESTS}


def _get(proxy, path, **kwargs):
    return requests.get(proxy.url + path, timeout=30, **kwargs)


def _error_code(response) -> str:
    body = response.json()
    assert set(body) == {"errors"}
    return body["errors"][0]["code"]


def test_api_root(proxy):
    response = _get(proxy, "/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_every_manifest_kind_passes_byte_exact(proxy, seeded):
    """OCI manifest and index, Docker schema2 and list, and every SIF generation."""
    kinds = set()
    for image in seeded.all_manifests():
        reference = image.tag or image.digest
        # By the prefix: on the default route, `sif/...` would be the SIF namespace.
        path = f"/v2/{UPSTREAM_PREFIX}/{image.repository}/manifests/{reference}"
        response = _get(proxy, path, headers=ACCEPT)
        assert response.status_code == 200, image.reference
        assert response.content == image.manifest, image.reference
        assert response.headers["Content-Type"] == image.media_type, image.reference
        assert response.headers["Docker-Content-Digest"] == image.digest
        assert response.headers["ETag"] == f'"{image.digest}"'
        assert int(response.headers["Content-Length"]) == len(image.manifest)
        kinds.add(image.media_type)
    assert kinds >= {oci.OCI_MANIFEST, oci.OCI_INDEX, oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST_LIST}


def test_head_manifest_has_the_headers_and_no_body(proxy, seeded):
    image = seeded["tools/alpha:1.0"]
    response = requests.head(
        f"{proxy.url}/v2/{image.repository}/manifests/1.0", headers=ACCEPT, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == image.digest
    assert int(response.headers["Content-Length"]) == len(image.manifest)
    assert response.headers["Content-Type"] == image.media_type
    assert response.content == b""


def test_routing_by_prefix_by_ns_and_default(proxy, seeded):
    image = seeded["tools/alpha:1.0"]
    paths = [
        f"/v2/{UPSTREAM_PREFIX}/tools/alpha/manifests/1.0",
        f"/v2/tools/alpha/manifests/1.0?ns={UPSTREAM_PREFIX}",
        "/v2/tools/alpha/manifests/1.0",
    ]
    for path in paths:
        response = _get(proxy, path, headers=ACCEPT)
        assert response.status_code == 200, path
        assert response.content == image.manifest
    response = _get(proxy, "/v2/tools/alpha/manifests/1.0?ns=unknown.example", headers=ACCEPT)
    assert response.status_code == 404 and _error_code(response) == "NAME_UNKNOWN"


def test_ns_matches_the_upstream_host(proxy, upstream, seeded):
    response = _get(proxy, f"/v2/tools/beta/manifests/2.0?ns={upstream.host}", headers=ACCEPT)
    assert response.status_code == 200
    assert response.content == seeded["tools/beta:2.0"].manifest


def test_library_namespace_for_one_component_names(make_proxy, upstream, seeded):
    from tests.conftest import upstream_entry
    from tests.support.seed import RegistryClient, publish_image

    client = RegistryClient(upstream.url)
    layer = oci.make_layer("busybox", {"bin/busybox": 1000}, "COPY busybox /bin/")
    try:
        [image] = publish_image(
            client,
            "library/busybox",
            ["1.36"],
            oci.ImageConfigSpec(title="busybox", version="1.36"),
            [layer],
        )
    finally:
        client.close()
    proxy = make_proxy({"hub": upstream_entry(upstream.url, library_namespace="library")})
    for path in ("/v2/busybox/manifests/1.36", f"/v2/{UPSTREAM_PREFIX}/busybox/manifests/1.36"):
        response = _get(proxy, path, headers=ACCEPT)
        assert response.status_code == 200, path
        assert response.headers["Docker-Content-Digest"] == image.digest


def test_blob_get_head_and_ranges(proxy, seeded):
    image = seeded["tools/alpha:1.0"]
    layer = image.layers[0]
    data = image.blob_data[layer["digest"]]
    path = f"/v2/{image.repository}/blobs/{layer['digest']}"
    head = requests.head(proxy.url + path, timeout=10)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(data)
    assert head.headers["Docker-Content-Digest"] == layer["digest"]
    for attempt in ("miss", "hit"):
        response = _get(proxy, path)
        assert response.status_code == 200, attempt
        assert response.content == data
        assert response.headers["Docker-Content-Digest"] == layer["digest"]
    ranged = _get(proxy, path, headers={"Range": "bytes=5-14"})
    assert ranged.status_code == 206
    assert ranged.content == data[5:15]
    assert ranged.headers["Content-Range"] == f"bytes 5-14/{len(data)}"
    suffix = _get(proxy, path, headers={"Range": "bytes=-7"})
    assert suffix.status_code == 206 and suffix.content == data[-7:]
    for bad in (f"bytes={len(data)}-", "bytes=9-3", "bytes=0-1,4-5", "lines=1-2"):
        response = _get(proxy, path, headers={"Range": bad})
        assert response.status_code == 416, bad
        assert _error_code(response) == "RANGE_INVALID"


def test_range_on_a_miss_is_answered_from_the_fill(proxy, seeded):
    image = seeded["big/blob:1.0"]
    blob = seeded.big_blob
    start = 40 * 1024 * 1024
    response = _get(
        proxy,
        f"/v2/{image.repository}/blobs/{blob.digest}",
        headers={"Range": f"bytes={start}-{start + 99}"},
    )
    assert response.status_code == 206
    expected = b"".join(blob.chunks())[start : start + 100]
    assert response.content == expected


def test_empty_and_two_byte_configs(proxy, seeded):
    for reference in ("sif/zeroconfig:3.7", "sif/tool:1.0"):
        image = seeded[reference]
        config = image.config
        path = f"/v2/{UPSTREAM_PREFIX}/{image.repository}/blobs/{config['digest']}"
        response = _get(proxy, path)
        assert response.status_code == 200
        assert response.content == image.blob_data[config["digest"]]
        assert int(response.headers["Content-Length"]) == config["size"]


def test_big_blob_streams_complete_and_verified(proxy, seeded):
    image = seeded["big/blob:1.0"]
    blob = seeded.big_blob
    with _get(proxy, f"/v2/{image.repository}/blobs/{blob.digest}", stream=True) as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == blob.size
        digest = hashlib.sha256()
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
    assert f"sha256:{digest.hexdigest()}" == blob.digest
    assert proxy.wait_stored(blob.digest) == blob.size


def test_tags_list_with_pagination(proxy, seeded):
    response = _get(proxy, "/v2/tools/alpha/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": "tools/alpha", "tags": ["1.0", "latest"]}
    first = _get(proxy, "/v2/tools/alpha/tags/list?n=1")
    assert first.json()["tags"] == ["1.0"]
    assert 'rel="next"' in first.headers["Link"] and "last=1.0" in first.headers["Link"]
    second = _get(proxy, "/v2/tools/alpha/tags/list?n=1&last=1.0")
    assert second.json()["tags"] == ["latest"]
    bad = _get(proxy, "/v2/tools/alpha/tags/list?n=-1")
    assert bad.status_code == 400 and _error_code(bad) == "PAGINATION_NUMBER_INVALID"


def test_catalog_lists_cached_repositories(proxy, seeded):
    assert _get(proxy, "/v2/_catalog").json() == {"repositories": []}
    for reference in ("tools/beta:2.0", "sif/tool:1.0"):
        repository, tag = reference.split(":")
        path = f"/v2/{UPSTREAM_PREFIX}/{repository}/manifests/{tag}"
        assert _get(proxy, path, headers=ACCEPT).ok
    listed = _get(proxy, "/v2/_catalog").json()["repositories"]
    assert listed == [f"{UPSTREAM_PREFIX}/sif/tool", f"{UPSTREAM_PREFIX}/tools/beta"]
    page = _get(proxy, "/v2/_catalog?n=1").json()["repositories"]
    assert page == [f"{UPSTREAM_PREFIX}/sif/tool"]


def _raw_get(proxy, path):
    """Send `path` exactly as written (requests would resolve `..` before sending)."""
    connection = http.client.HTTPConnection(proxy.host, timeout=10)
    try:
        connection.request("GET", path, headers=ACCEPT)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    "path",
    [
        "/v2/tools/../../etc/manifests/1.0",
        "/v2/../../../etc/passwd/blobs/sha256:" + "0" * 64,
        "/v2/tools/%2e%2e/%2e%2e/etc/manifests/1.0",
        "/v2/tools/..%2f..%2fetc/manifests/1.0",
        "/v2/tools/alpha/manifests/..%2f..%2fx",
        "/v2/tools/alpha/blobs/..%2f..%2fsha256:" + "0" * 64,
    ],
)
def test_dot_dot_never_leaves_the_name_grammar(proxy, upstream, seeded, path):
    since = upstream.mark()
    status, body = _raw_get(proxy, path)
    assert status in (400, 404)
    assert body["errors"][0]["code"] in (
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "TAG_INVALID",
        "DIGEST_INVALID",
    )
    assert upstream.count(since=since) == 0
    assert not any(".." in p.name for p in proxy.cache_root.rglob("*"))


@pytest.mark.parametrize(
    "path,status,code",
    [
        ("/v2/Tools/Alpha/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/tools//alpha/manifests/1.0", 400, "NAME_INVALID"),
        ("/v2/tools/alpha/manifests/.hidden", 400, "TAG_INVALID"),
        ("/v2/tools/alpha/manifests/sha256:1234", 400, "DIGEST_INVALID"),
        ("/v2/tools/alpha/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"),
        ("/v2/tools/alpha/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        ("/v2/tools/alpha/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
        ("/v2/does/not/exist/tags/list", 404, "NAME_UNKNOWN"),
    ],
)
def test_bad_requests_get_oci_errors(proxy, seeded, path, status, code):
    response = _get(proxy, path, headers=ACCEPT)
    assert response.status_code == status, response.text
    assert _error_code(response) == code
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "method,path",
    [
        ("PUT", "/v2/tools/alpha/manifests/1.0"),
        ("DELETE", "/v2/tools/alpha/manifests/1.0"),
        ("POST", "/v2/tools/alpha/blobs/uploads/"),
        ("PATCH", "/v2/tools/alpha/blobs/uploads/abc"),
        ("DELETE", "/v2/tools/alpha/blobs/sha256:" + "0" * 64),
    ],
)
def test_push_methods_are_unsupported(proxy, method, path):
    response = requests.request(method, proxy.url + path, data=b"x", timeout=10)
    assert response.status_code == 405
    assert _error_code(response) == "UNSUPPORTED"


def test_accept_without_the_stored_type_is_refused(proxy, seeded):
    index = seeded["multi/app:1.0"]
    response = _get(
        proxy, f"/v2/{index.repository}/manifests/1.0", headers={"Accept": oci.OCI_MANIFEST}
    )
    assert response.status_code == 404 and _error_code(response) == "MANIFEST_UNKNOWN"
    anything = _get(proxy, f"/v2/{index.repository}/manifests/1.0", headers={"Accept": "*/*"})
    assert anything.status_code == 200 and anything.content == index.manifest


def test_conditional_get_with_etag(proxy, seeded):
    image = seeded["tools/alpha:1.0"]
    response = _get(
        proxy,
        "/v2/tools/alpha/manifests/1.0",
        headers={**ACCEPT, "If-None-Match": f'"{image.digest}"'},
    )
    assert response.status_code == 304


def test_accept_sent_as_several_header_lines(proxy, seeded):
    """containers/image sends one Accept line per media type; all of them count."""
    image = seeded["legacy/dockerimg:v2"]
    connection = http.client.HTTPConnection(proxy.host, timeout=10)
    try:
        connection.putrequest("GET", f"/v2/{image.repository}/manifests/v2")
        connection.putheader("Accept", oci.OCI_MANIFEST)
        connection.putheader("Accept", oci.DOCKER_MANIFEST)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 200
        assert response.read() == image.manifest
    finally:
        connection.close()
