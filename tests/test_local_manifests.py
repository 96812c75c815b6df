"""Manifests and tags of the local namespace over HTTP, against a real `mirror serve` with
logins: PUT of every media type the pull side serves and GET back byte-exact, refusals
that store nothing, who may write where, DELETE (seen by a second instance too), listings,
and pulls that never need an upstream."""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support import oci
from tests.support.accounts import write_groups, write_htpasswd
from tests.support.conversion import siftool
from tests.support.local_push import (
    image_shapes,
    place_blob,
    push_shape,
    put_manifest,
)
from tests.support.processes import LOOPBACK, free_port
from tests.support.prometheus import parse_metrics, total
from tests.support.seed import RegistryClient
from tests.support.sif_pulls import small_image

ALICE = ("alice", "alice's long password")  # member of group "lab"
BOB = ("bob", "bob's long password")
ROOT = ("root", "root's long password")  # [local] admins
SHAPES = image_shapes("local-manifests")


@pytest.fixture
def auth(tmp_path) -> dict:
    return {
        "htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([ALICE, BOB, ROOT]))),
        "groups_file": str(write_groups(tmp_path / "groups", {"lab": ["alice"]})),
    }


@pytest.fixture
def make_registry(make_proxy, auth):
    """A mirror whose only upstream is unreachable (nothing listens on its port), with the
    local namespace on; `cache_root` shares another instance's store."""

    def make(**options):
        unreachable = upstream_entry(f"http://{LOOPBACK}:{free_port()}")
        local = {"prefix": "local", "admins": ["root"], "access": "authenticated"}
        return make_proxy({"test": unreachable}, auth=auth, local=local, **options)

    return make


@pytest.fixture
def registry(make_registry):
    return make_registry()


def get(proxy, path: str, auth=ALICE, method: str = "GET", **headers) -> requests.Response:
    return requests.request(method, f"{proxy.url}{path}", auth=auth, headers=headers, timeout=60)


def error(response: requests.Response) -> dict:
    [only] = response.json()["errors"]
    return only


def sha256(data: bytes) -> str:
    return oci.sha256_digest(data)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.label)
def test_a_pushed_manifest_is_served_byte_exact_by_tag_and_digest(registry, shape):
    digest = push_shape(registry, "alice/tool", "1.0", shape, ALICE)
    assert digest == sha256(shape.manifest)
    for reference in ("1.0", digest):
        path = f"/v2/local/alice/tool/manifests/{reference}"
        response = get(registry, path, Accept=",".join(oci.ALL_MANIFEST_TYPES))
        assert response.status_code == 200, response.text
        assert response.content == shape.manifest
        assert response.headers["Content-Type"] == shape.served_type
        assert response.headers["Docker-Content-Digest"] == digest
        head = get(registry, path, method="HEAD")
        assert head.headers["Content-Length"] == str(len(shape.manifest))
    for blob in shape.blobs:
        response = get(registry, f"/v2/local/alice/tool/blobs/{sha256(blob)}")
        assert response.status_code == 200 and response.content == blob


def test_a_put_by_digest_stores_the_manifest_without_a_tag(registry):
    shape = SHAPES[0]
    for blob in shape.blobs:
        place_blob(registry.cache_root, "alice/bydigest", blob)
    digest = sha256(shape.manifest)
    response = put_manifest(
        registry, "alice/bydigest", digest, shape.manifest, shape.put_type, ALICE
    )
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/v2/local/alice/bydigest/manifests/{digest}"
    assert response.headers["Docker-Content-Digest"] == digest
    assert "OCI-Subject" not in response.headers
    assert get(registry, f"/v2/local/alice/bydigest/manifests/{digest}").content == shape.manifest
    tags = get(registry, "/v2/local/alice/bydigest/tags/list")
    assert tags.json() == {"name": "local/alice/bydigest", "tags": []}
    # The access log line of the push shows who sent it and the bytes received.
    put_line = f'alice "PUT /v2/local/alice/bydigest/manifests/{digest}" 201 {len(shape.manifest)} '
    assert put_line in registry.log()


@pytest.mark.parametrize("index_type", [oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST])
def test_an_index_is_taken_once_its_children_are_in_the_repository(registry, index_type):
    children = []
    child_type = oci.OCI_MANIFEST if index_type == oci.OCI_INDEX else oci.DOCKER_MANIFEST
    for arch, shape in (("amd64", SHAPES[0]), ("arm64", SHAPES[1])):
        for blob in shape.blobs:
            place_blob(registry.cache_root, "lab/multi", blob)
        digest = sha256(shape.manifest)
        assert put_manifest(registry, "lab/multi", digest, shape.manifest, None, ALICE).ok
        platform = {"architecture": arch, "os": "linux"}
        children.append(oci.descriptor_for(child_type, shape.manifest, platform=platform))
    index = oci.index_manifest(index_type, children)
    response = put_manifest(registry, "lab/multi", "2", index, index_type, ALICE)
    assert response.status_code == 201, response.text
    served = get(registry, "/v2/local/lab/multi/manifests/2", Accept=index_type)
    assert served.content == index and served.headers["Content-Type"] == index_type


def test_a_manifest_naming_a_blob_not_in_the_repository_is_refused_and_nothing_stored(registry):
    shape = SHAPES[2]
    config, sif = shape.blobs
    place_blob(registry.cache_root, "alice/tool", config)
    # The SIF is in the store, but linked only to another repository.
    place_blob(registry.cache_root, "bob/other", sif)
    for reference in ("1.0", sha256(shape.manifest)):
        response = put_manifest(registry, "alice/tool", reference, shape.manifest, None, ALICE)
        assert response.status_code == 400
        assert error(response)["code"] == "MANIFEST_BLOB_UNKNOWN"
        assert error(response)["detail"] == sha256(sif)
        assert sha256(sif) in error(response)["message"]
    missing = put_manifest(registry, "bob/other", "1", shape.manifest, None, BOB)
    assert error(missing)["detail"] == sha256(config)  # never pushed anywhere
    _assert_nothing_stored(registry, "alice/tool", shape.manifest)


def test_an_index_naming_a_child_not_in_the_repository_is_refused(registry):
    child = SHAPES[0].manifest
    index = oci.index_manifest(oci.OCI_INDEX, [oci.descriptor_for(oci.OCI_MANIFEST, child)])
    response = put_manifest(registry, "alice/multi", "1", index, oci.OCI_INDEX, ALICE)
    assert response.status_code == 400
    assert error(response) == {
        "code": "MANIFEST_BLOB_UNKNOWN",
        "message": error(response)["message"],
        "detail": sha256(child),
    }
    _assert_nothing_stored(registry, "alice/multi", index)


def _assert_nothing_stored(registry, name: str, manifest: bytes) -> None:
    digest = sha256(manifest)
    assert digest.split(":")[1] not in registry.stored_blobs()
    for reference in ("1.0", "1", digest):
        response = get(registry, f"/v2/local/{name}/manifests/{reference}")
        assert response.status_code == 404
        assert error(response)["code"] == "MANIFEST_UNKNOWN"


def test_a_put_by_a_digest_that_is_not_the_bodys_is_refused(registry):
    shape = SHAPES[0]
    for blob in shape.blobs:
        place_blob(registry.cache_root, "alice/tool", blob)
    wrong = sha256(shape.manifest + b" ")
    response = put_manifest(registry, "alice/tool", wrong, shape.manifest, shape.put_type, ALICE)
    assert response.status_code == 400
    assert error(response)["code"] == "DIGEST_INVALID"
    _assert_nothing_stored(registry, "alice/tool", shape.manifest)


@pytest.mark.parametrize(
    ("body", "media_type", "status"),
    [
        (b"not json", oci.OCI_MANIFEST, 400),
        (b"[]", oci.OCI_MANIFEST, 400),
        (json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode(), None, 400),
        (oci.go_json({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}),
         oci.OCI_MANIFEST, 400),  # the Content-Type contradicts the body
        (oci.go_json({"schemaVersion": 2, "layers": []}), oci.OCI_MANIFEST, 400),  # no config
        (oci.go_json({"schemaVersion": 2, "config": {"mediaType": "x", "size": 2,
                      "digest": "sha256:abc"}, "layers": []}), oci.OCI_MANIFEST, 400),
        (oci.go_json({"schemaVersion": 2, "manifests": []}),
         "application/vnd.docker.distribution.manifest.v1+prettyjws", 400),
        (b"{" + b" " * (16 * 1024 * 1024) + b"}", oci.OCI_MANIFEST, 413),
    ],
    ids=["not-json", "not-object", "schema1", "type-mismatch", "no-config", "bad-digest",
         "schema1-type", "too-large"],
)  # fmt: skip
def test_a_manifest_the_pull_side_would_not_serve_is_refused(registry, body, media_type, status):
    response = put_manifest(registry, "alice/bad", "1", body, media_type, ALICE)
    assert response.status_code == status, response.text
    assert error(response)["code"] == "MANIFEST_INVALID"
    assert get(registry, "/v2/local/alice/bad/manifests/1").status_code == 404


def test_writers_are_the_namespace_owner_its_groups_members_and_admins(registry):
    shape = SHAPES[3]
    for name in ("alice/tool", "lab/tool", "bob/tool"):
        for blob in shape.blobs:
            place_blob(registry.cache_root, name, blob)
    denied = put_manifest(registry, "alice/tool", "1", shape.manifest, shape.put_type, BOB)
    assert denied.status_code == 403
    assert error(denied)["code"] == "DENIED"
    assert "bob" in error(denied)["message"]
    anonymous = put_manifest(registry, "alice/tool", "1", shape.manifest, shape.put_type, None)
    assert anonymous.status_code == 401
    assert 'scope="repository:local/alice/tool:pull,push"' in anonymous.headers["WWW-Authenticate"]
    assert put_manifest(registry, "lab/tool", "1", shape.manifest, None, ALICE).status_code == 201
    assert put_manifest(registry, "lab/tool", "2", shape.manifest, None, BOB).status_code == 403
    assert put_manifest(registry, "bob/tool", "1", shape.manifest, None, ROOT).status_code == 201
    assert get(registry, "/v2/local/alice/tool/manifests/1").status_code == 404
    delete = get(registry, "/v2/local/lab/tool/manifests/1", auth=BOB, method="DELETE")
    assert delete.status_code == 403 and error(delete)["code"] == "DENIED"
    url = f"{registry.url}/v2/{UPSTREAM_PREFIX}/tools/x/manifests/1"
    upstream = requests.put(url, data=shape.manifest, auth=ROOT, timeout=60)
    assert upstream.status_code == 405  # not the local namespace: read-only
    assert error(upstream)["code"] == "UNSUPPORTED"
    nameless = put_manifest(registry, "x", "1", shape.manifest, None, ROOT)
    assert nameless.status_code == 400 and error(nameless)["code"] == "NAME_INVALID"


def test_delete_by_tag_keeps_the_manifest_and_by_digest_removes_it_on_every_instance(
    make_registry, tmp_path
):
    shared = {"root": str(tmp_path / "shared-cache")}
    first = make_registry(**shared)
    second = make_registry(**shared)
    shape = SHAPES[5]
    digest = push_shape(first, "alice/tool", "1.0", shape, ALICE)
    push_shape(first, "alice/tool", "latest", shape, ALICE)
    for proxy in (first, second):  # both have answered (and could remember) the tags
        for reference in ("1.0", "latest", digest):
            assert get(proxy, f"/v2/local/alice/tool/manifests/{reference}").status_code == 200
    untag = get(first, "/v2/local/alice/tool/manifests/1.0", method="DELETE")
    assert untag.status_code == 202
    for proxy in (first, second):
        assert get(proxy, "/v2/local/alice/tool/manifests/1.0").status_code == 404
        assert get(proxy, f"/v2/local/alice/tool/manifests/{digest}").status_code == 200
        assert get(proxy, "/v2/local/alice/tool/tags/list").json()["tags"] == ["latest"]
    again = get(second, "/v2/local/alice/tool/manifests/1.0", method="DELETE")
    assert again.status_code == 404 and error(again)["code"] == "MANIFEST_UNKNOWN"
    delete = get(second, f"/v2/local/alice/tool/manifests/{digest}", method="DELETE")
    assert delete.status_code == 202
    for proxy in (first, second):
        for reference in ("latest", digest):
            response = get(proxy, f"/v2/local/alice/tool/manifests/{reference}")
            assert response.status_code == 404
            assert error(response)["code"] == "MANIFEST_UNKNOWN"
    for blob in shape.blobs:  # blobs stay until gc
        assert get(first, f"/v2/local/alice/tool/blobs/{sha256(blob)}").status_code == 200
    gone = get(first, f"/v2/local/alice/tool/manifests/{digest}", method="DELETE")
    assert gone.status_code == 404


def test_a_re_pushed_tag_is_served_new_by_every_instance(make_registry, tmp_path):
    shared = {"root": str(tmp_path / "shared-cache")}
    first, second = make_registry(**shared), make_registry(**shared)
    old = push_shape(first, "alice/tool", "1.0", SHAPES[6], ALICE)
    assert get(second, "/v2/local/alice/tool/manifests/1.0").headers["Docker-Content-Digest"] == old
    new = push_shape(second, "alice/tool", "1.0", SHAPES[7], ALICE)
    for proxy in (first, second):
        response = get(proxy, "/v2/local/alice/tool/manifests/1.0")
        assert response.headers["Docker-Content-Digest"] == new != old


def test_local_repositories_are_listed_in_the_catalog_and_their_tags(registry):
    push_shape(registry, "alice/tool", "1.0", SHAPES[0], ALICE)
    push_shape(registry, "alice/tool", "2.0", SHAPES[1], ALICE)
    push_shape(registry, "lab/app", "v1", SHAPES[2], ALICE)
    catalog = get(registry, "/v2/_catalog").json()["repositories"]
    assert {"local/alice/tool", "local/lab/app"} <= set(catalog)
    tags = get(registry, "/v2/local/alice/tool/tags/list")
    assert tags.json() == {"name": "local/alice/tool", "tags": ["1.0", "2.0"]}
    unknown = get(registry, "/v2/local/alice/nothing/tags/list")
    assert unknown.status_code == 404 and error(unknown)["code"] == "NAME_UNKNOWN"


def test_a_missing_blob_is_a_quick_404_and_a_pull_never_asks_an_upstream(registry):
    shape = SHAPES[0]
    digest = push_shape(registry, "alice/tool", "1.0", shape, ALICE)
    absent = sha256(b"never pushed")
    for method in ("HEAD", "GET"):
        response = get(registry, f"/v2/local/alice/tool/blobs/{absent}", method=method)
        assert response.status_code == 404
    assert error(get(registry, f"/v2/local/alice/tool/blobs/{absent}"))["code"] == "BLOB_UNKNOWN"
    other = get(registry, f"/v2/local/bob/tool/blobs/{sha256(shape.blobs[0])}", auth=BOB)
    assert other.status_code == 404  # stored, but not linked to bob/tool
    unknown = get(registry, "/v2/local/alice/tool/manifests/9.9")
    assert unknown.status_code == 404 and error(unknown)["code"] == "MANIFEST_UNKNOWN"
    assert get(registry, f"/v2/local/alice/tool/manifests/{digest}").status_code == 200
    metrics = parse_metrics(requests.get(f"{registry.url}/metrics", timeout=60).text)
    assert total(metrics, "hpc_mirror_upstream_requests_total") == 0
    assert total(metrics, "hpc_mirror_pushes_total", kind="manifest", outcome="stored") == 1
    assert total(metrics, "hpc_mirror_pushed_bytes_total") == len(shape.manifest)


def test_an_image_pushed_over_http_is_pulled_back_and_converted_to_a_sif(registry, tmp_path):
    built = small_image("pushed to the local namespace")
    client = RegistryClient(registry.url, username=ALICE[0], password=ALICE[1])
    try:
        for descriptor, data in built.blobs():
            client.push_blob("local/alice/small", data, descriptor["mediaType"])
        client.push_manifest("local/alice/small", "1", built.manifest, oci.OCI_MANIFEST)
    finally:
        client.close()
    assert get(registry, "/v2/local/alice/small/manifests/1").content == built.manifest
    sif_manifest = get(registry, "/v2/sif/local/alice/small/manifests/1", Accept=oci.OCI_MANIFEST)
    assert sif_manifest.status_code == 200, sif_manifest.text
    [sif_layer] = sif_manifest.json()["layers"]
    assert sif_layer["mediaType"] == "application/vnd.sylabs.sif.layer.v1.sif"
    sif = get(registry, f"/v2/sif/local/alice/small/blobs/{sif_layer['digest']}")
    (tmp_path / "small.sif").write_bytes(sif.content)
    assert "FS (Squashfs/*System/amd64)" in siftool("list", tmp_path / "small.sif")
    logged = [line for line in registry.log().splitlines() if "/sif/local/alice/small/" in line]
    assert logged and all(line.endswith(" local") for line in logged)
